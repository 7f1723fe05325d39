# Dalli (ruby-dalli, binary protocol) through the memgate sidecar, without and
# with credentials configured. Usage: proxy_dalli.rb ADDR
require 'dalli'
addr = ARGV[0]
[[{}, 'plain'], [{ username: 'app', password: 'stale-password' }, 'sasl']].each do |opts, label|
  dc = Dalli::Client.new(addr, opts.merge(socket_timeout: 5))
  dc.set("d-#{label}", [1, 2, 3])
  raise "dalli #{label}: get" unless dc.get("d-#{label}") == [1, 2, 3]
  keys = (0...40).map { |i| "d-#{label}-#{i}" }
  keys.each_with_index { |k, i| dc.set(k, i) }
  raise "dalli #{label}: get_multi" unless dc.get_multi(keys) == keys.each_with_index.to_h { |k, i| [k, i] }
  dc.set("d-n-#{label}", 1, nil, raw: true)
  raise "dalli #{label}: incr" unless dc.incr("d-n-#{label}", 4) == 5
  puts "dalli #{label}: ok"
end
puts 'all dalli clients through the proxy: ok'
