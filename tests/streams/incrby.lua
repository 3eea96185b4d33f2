-- @@NONCE (a fresh value per test run: a source no server has seen yet)
return redis.call('INCRBY', KEYS[1], ARGV[1])
