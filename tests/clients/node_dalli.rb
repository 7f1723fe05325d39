# Dalli (Debian's ruby-dalli, binary protocol + SASL) against a memgate node.
# Usage: node_dalli.rb PLAIN_ADDR TLS_ADDR CA_PEM USER PASSWORD
require 'dalli'
require 'openssl'

plain, tls, ca_pem, user, password = ARGV

def check(cond, what)
  raise "dalli: #{what}" unless cond
end

def exercise(dc, label, multi: true)
  dc.set("dalli-#{label}", { 'a' => 1 })
  check(dc.get("dalli-#{label}") == { 'a' => 1 }, "#{label} round trip")
  check(dc.add("dalli-#{label}", 2) == false, "#{label} add on existing")
  dc.set("dalli-n-#{label}", 5, nil, raw: true)
  check(dc.incr("dalli-n-#{label}", 3) == 8, "#{label} incr")
  keys = (0...25).map { |i| "dalli-multi-#{label}-#{i}" }
  keys.each_with_index { |k, i| dc.set(k, i) }
  if multi
    check(dc.get_multi(keys) == keys.each_with_index.to_h { |k, i| [k, i] }, "#{label} get_multi")
  else
    keys.each_with_index { |k, i| check(dc.get(k) == i, "#{label} get #{k}") }
  end
  check(dc.delete("dalli-#{label}"), "#{label} delete")
  check(dc.get("dalli-#{label}").nil?, "#{label} gone")
  puts "dalli #{label}: ok"
end

exercise(Dalli::Client.new(plain, username: user, password: password, socket_timeout: 5), 'plain')

ctx = OpenSSL::SSL::SSLContext.new
ctx.cert_store = OpenSSL::X509::Store.new.tap { |s| s.add_file(ca_pem) }
ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
ctx.verify_hostname = true
exercise(Dalli::Client.new(tls, username: user, password: password, ssl_context: ctx, socket_timeout: 5), 'tls',
         # Dalli 3.0.6's get_multi calls a method its SSL socket lacks.
         multi: false)

bad = Dalli::Client.new(plain, username: user, password: 'wrong', socket_timeout: 2)
begin
  bad.set('x', 1)
  raise 'dalli: a wrong password was accepted'
rescue Dalli::DalliError, Dalli::RingError
  puts 'dalli wrong password: refused'
end
