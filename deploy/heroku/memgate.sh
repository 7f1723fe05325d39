# .profile.d/memgate.sh: start the memgate sidecar before the app, where the
# stunnel TLS buildpack used to start stunnel.
#
# Heroku runs every .profile.d script at dyno start. The add-on sets
# MEMCACHIER_SERVERS, MEMCACHIER_USERNAME and MEMCACHIER_PASSWORD; memgate reads
# them itself (the password never appears on a command line). The app keeps
# pointing its memcached client at 127.0.0.1:11211, with no TLS and no login.
#
# Put the memgate binary in the slug at bin/memgate (see README.md here) and the
# CA certificate of the cache service at config/memcache-ca.crt.

if [ -n "${MEMCACHIER_SERVERS:-}" ] && [ -z "${MEMGATE_DISABLED:-}" ]; then
  "${HOME}/bin/memgate" proxy \
    --ca "${MEMGATE_CA:-${HOME}/config/memcache-ca.crt}" \
    --tls-port 11219 \
    --listen 127.0.0.1:11211 \
    --metrics-listen "${MEMGATE_METRICS_LISTEN:-127.0.0.1:9151}" \
    >>/tmp/memgate.log 2>&1 &
  # Give the app a listening sidecar: wait (briefly) for 127.0.0.1:11211.
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null && break
    sleep 0.1
  done
fi
