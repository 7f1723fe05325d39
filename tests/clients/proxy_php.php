<?php
// php-memcached through the memgate sidecar: the binary protocol with
// setSaslAuthData (accepted whatever it carries), and the text protocol
// without credentials. Usage: proxy_php.php PROXY_ADDR USER PASSWORD
[$script, $proxy, $user, $password] = $argv;
[$host, $port] = explode(':', $proxy);

function check($cond, $what) {
    if (!$cond) {
        fwrite(STDERR, "php-memcached: $what\n");
        exit(1);
    }
}

function blob($n, $seed) {
    $s = '';
    for ($i = 0; $i < $n; $i++) {
        $s .= chr(($i * 7 + $seed) % 256);
    }
    return $s;
}

function exercise(Memcached $m, $label) {
    // append/prepend need compression off; values here are raw bytes anyway.
    $m->setOption(Memcached::OPT_COMPRESSION, false);
    $k = 'php-' . str_replace(' ', '-', $label);
    check($m->set($k, 'value'), "$label set: " . $m->getResultMessage());
    check($m->get($k) === 'value', "$label get");
    $raw = blob(25000, 9);
    check($m->set("$k-raw", $raw), "$label set raw: " . $m->getResultMessage());
    check($m->get("$k-raw") === $raw, "$label raw bytes");
    check($m->add($k, 'x') === false, "$label add on existing");
    check($m->replace($k, 'r'), "$label replace");
    check($m->append($k, '+a'), "$label append");
    check($m->prepend($k, 'p+'), "$label prepend");
    check($m->get($k) === 'p+r+a', "$label appended");
    $items = [];
    for ($i = 0; $i < 40; $i++) {
        $items["$k-multi-$i"] = str_repeat("v$i", $i + 1);
    }
    check($m->setMulti($items), "$label setMulti");
    $got = $m->getMulti(array_merge(array_keys($items), ["$k-absent"]));
    check($got == $items, "$label getMulti");
    check($m->set("$k-n", 5), "$label set n");
    check($m->increment("$k-n", 3) === 8, "$label increment");
    check($m->decrement("$k-n", 100) === 0, "$label decrement floors at 0");
    $r = $m->get($k, null, Memcached::GET_EXTENDED);
    check($r['value'] === 'p+r+a' && $r['cas'] > 0, "$label get with cas");
    check($m->cas($r['cas'], $k, 'cas-new'), "$label cas");
    check($m->cas($r['cas'], $k, 'cas-newer') === false, "$label stale cas");
    check($m->get($k) === 'cas-new', "$label cas value");
    check($m->touch($k, 300), "$label touch");
    check($m->delete($k), "$label delete");
    check($m->get($k) === false && $m->getResultCode() === Memcached::RES_NOTFOUND, "$label gone");
    check($m->delete($k) === false, "$label delete missing");
    check(count($m->getStats()) === 1, "$label stats");
    echo "php-memcached $label: ok\n";
}

$bin = new Memcached();
$bin->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$bin->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
$bin->setSaslAuthData($user, $password);
$bin->addServer($host, (int)$port);
exercise($bin, 'binary with sasl');

$text = new Memcached();
$text->addServer($host, (int)$port);
exercise($text, 'text');

echo "php-memcached through the proxy: ok\n";
