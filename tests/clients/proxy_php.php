<?php
// php-memcached (libmemcached) through the memgate sidecar: text, binary, and
// binary with SASL credentials still configured (as the hosted docs set it up).
// Usage: php proxy_php.php HOST PORT
[$_, $host, $port] = $argv;

function check($ok, $what) { if (!$ok) { fwrite(STDERR, "php: $what\n"); exit(1); } }

function exercise($m, $label) {
    $m->addServer($GLOBALS['host'], (int)$GLOBALS['port']);
    check($m->set("php-$label", ['a' => 1]), "$label set: " . $m->getResultMessage());
    check($m->get("php-$label") === ['a' => 1], "$label get");
    $keys = [];
    for ($i = 0; $i < 30; $i++) { $keys["php-$label-$i"] = "v$i"; }
    check($m->setMulti($keys), "$label setMulti");
    check($m->getMulti(array_keys($keys)) == $keys, "$label getMulti");
    check($m->set("php-n-$label", 5), "$label set n");
    check($m->increment("php-n-$label", 3) === 8, "$label increment");
    check($m->delete("php-$label"), "$label delete");
    check($m->get("php-$label") === false && $m->getResultCode() === Memcached::RES_NOTFOUND, "$label gone");
    echo "php-memcached $label: ok\n";
}

exercise(new Memcached(), 'text');
$b = new Memcached();
$b->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
exercise($b, 'binary');
$s = new Memcached();
$s->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$s->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
$s->setSaslAuthData('app', 'stale-password');
exercise($s, 'binary-sasl');
echo "all php clients through the proxy: ok\n";
