# Dalli (Debian's ruby-dalli 3.0.6, binary protocol) through the memgate
# sidecar, with and without username/password (a login is accepted whatever
# it carries). Usage: proxy_dalli.rb PROXY_ADDR USER PASSWORD
require 'dalli'

proxy, user, password = ARGV

def check(cond, what)
  raise "dalli: #{what}" unless cond
end

def exercise(dc, label)
  key = "dalli-#{label.tr(' ', '-')}"
  dc.set(key, { 'a' => 1, 'b' => [1, 2, 3] })
  check(dc.get(key) == { 'a' => 1, 'b' => [1, 2, 3] }, "#{label} round trip")
  raw = (0...20_000).map { |i| ((i * 7 + 1) % 256).chr }.join.b
  dc.set("#{key}-raw", raw, nil, raw: true)
  check(dc.get("#{key}-raw", raw: true).b == raw, "#{label} raw bytes")
  check(dc.add(key, 2) == false, "#{label} add on existing")
  check(dc.replace(key, 'r'), "#{label} replace")
  check(dc.get(key) == 'r', "#{label} replaced")
  dc.set("#{key}-n", 5, nil, raw: true)
  check(dc.incr("#{key}-n", 3) == 8, "#{label} incr")
  check(dc.decr("#{key}-n", 100).zero?, "#{label} decr floors at 0")
  check(dc.incr("#{key}-missing", 1).nil?, "#{label} incr on a miss")
  check(dc.append("#{key}-n", 'x'), "#{label} append")
  check(dc.get("#{key}-n", raw: true) == '0x', "#{label} appended")
  keys = (0...40).map { |i| "#{key}-multi-#{i}" }
  keys.each_with_index { |k, i| dc.set(k, "v#{i}" * i) }
  want = keys.each_with_index.to_h { |k, i| [k, "v#{i}" * i] }
  check(dc.get_multi(keys + ["#{key}-absent"]) == want, "#{label} get_multi")
  cas_ok = dc.cas(key) { |v| v + '-cas' }
  check(cas_ok, "#{label} cas")
  check(dc.get(key) == 'r-cas', "#{label} cas value")
  check(dc.touch(key, 300), "#{label} touch")
  check(dc.delete(key), "#{label} delete")
  check(dc.get(key).nil?, "#{label} gone")
  check(!dc.stats.empty?, "#{label} stats")
  check(!dc.version.values.compact.empty?, "#{label} version")
  puts "dalli #{label}: ok"
end

exercise(Dalli::Client.new(proxy, socket_timeout: 5), 'without credentials')
exercise(Dalli::Client.new(proxy, username: user, password: password, socket_timeout: 5),
         'with credentials')
puts 'dalli through the proxy: ok'
