#!lua name=strata
-- Redis Functions strata loads into the upstream (FUNCTION LOAD REPLACE) at start and
-- after every reconnect. They hold the steps that must be atomic inside Redis.

-- strata_hset_absent KEYS[1]=key ARGV[1]=ttl_ms ARGV[2..]=field, value, ...
-- Writes a hash loaded from PostgreSQL only if the key does not exist yet, with its TTL
-- in the same step: a newer write by a client is never clobbered, and the hash is never
-- visible without a TTL. Returns 1 when written, 0 when the key already existed.
local function hset_absent(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then
    return 0
  end
  if #args < 3 then
    return 0
  end
  redis.call('HSET', keys[1], unpack(args, 2))
  redis.call('PEXPIRE', keys[1], args[1])
  return 1
end

redis.register_function('strata_hset_absent', hset_absent)
