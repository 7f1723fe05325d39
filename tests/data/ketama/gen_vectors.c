/*
 * Golden vectors for src/proxy/ring.rs, produced by the real libmemcached
 * with MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED (what php-memcached's
 * LIBKETAMA_COMPATIBLE and pylibmc's ketama_weighted turn on).
 *
 * Build and run (see README.md):
 *   cc gen_vectors.c $(pkg-config --cflags --libs libmemcached) -o gen && ./gen > vectors.tsv
 *
 * Nothing is connected to: memcached_generate_hash() only walks the continuum.
 * Output: '#' header lines naming every server set (host, port, weight in
 * libmemcached's order = our index order), one column-name line, then one row
 * per key: the key in hex, then the server index for each set.
 */
#include <libmemcached/memcached.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv { const char *host; in_port_t port; uint32_t weight; };
struct set {
  const char *name;
  struct srv servers[8];
  int skip; /* -1, or an index left out: the ring must equal an "eject" */
};

static const struct set SETS[] = {
  {"one", {{"mc1.example.com", 11211, 1}}, -1},
  {"three", {{"10.0.1.1", 11211, 1}, {"10.0.1.2", 11211, 1}, {"10.0.1.3", 11211, 1}}, -1},
  {"mixed_ports",
   {{"mc1.example.com", 11211, 1}, {"mc2.example.com", 11219, 1}, {"mc3.example.com", 12345, 1}},
   -1},
  {"weighted",
   {{"cache-a.internal", 11211, 1}, {"cache-b.internal", 11211, 2}, {"10.0.0.3", 11219, 3},
    {"cache-d.internal", 11211, 1}, {"cache-e.internal", 11219, 5}},
   -1},
  /* 1/25*40*5 = 8 exactly, but libmemcached's float math gives 7.99.. -> 7 */
  {"f32_rounding",
   {{"n1", 11211, 1}, {"n2", 11211, 3}, {"n3", 11211, 7}, {"n4", 11211, 7}, {"n5", 11211, 7}},
   -1},
  /* hostnames exactly as memcached_servers_parse("[::1]:11211,...") stores them */
  {"ipv6", {{"[::1]", 11211, 1}, {"[2001:db8::2]", 11219, 1}, {"127.0.0.1", 11211, 1}}, -1},
  /* "weighted" with index 2 ejected: rebuilt over 4 live servers */
  {"weighted_without_2",
   {{"cache-a.internal", 11211, 1}, {"cache-b.internal", 11211, 2}, {"10.0.0.3", 11219, 3},
    {"cache-d.internal", 11211, 1}, {"cache-e.internal", 11219, 5}},
   2},
};
#define NSETS (sizeof(SETS) / sizeof(SETS[0]))
#define NKEYS 2000

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { /* xorshift64: deterministic, no libc rand() */
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng;
}

/* Key i: "key:i" for i < 1500, then 400 arbitrary-byte keys of 1..64 bytes,
 * then 100 printable keys of the 250-byte maximum. */
static size_t make_key(int i, unsigned char *out) {
  if (i < 1500) return (size_t)sprintf((char *)out, "key:%d", i);
  size_t len = i < 1900 ? 1 + next() % 64 : 250;
  for (size_t j = 0; j < len; j++)
    out[j] = i < 1900 ? (unsigned char)next() : (unsigned char)(33 + next() % 94);
  return len;
}

int main(void) {
  memcached_st *memc[NSETS];
  int map[NSETS][8]; /* libmemcached index -> index in the full set */
  printf("# ketama golden vectors: libmemcached %s, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED=1\n",
         LIBMEMCACHED_VERSION_STRING);
  printf("# columns after key_hex: server index (into the listed set) from memcached_generate_hash\n");
  for (size_t s = 0; s < NSETS; s++) {
    memc[s] = memcached_create(NULL);
    if (!memc[s] || memcached_behavior_set(memc[s], MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1)
        != MEMCACHED_SUCCESS) {
      fprintf(stderr, "setup failed\n");
      return 1;
    }
    printf("# set %s:", SETS[s].name);
    int n = 0;
    for (int k = 0; k < 8 && SETS[s].servers[k].host; k++) {
      const struct srv *v = &SETS[s].servers[k];
      printf(" %s/%u/%u", v->host, v->port, v->weight);
      if (k == SETS[s].skip) continue;
      if (memcached_server_add_with_weight(memc[s], v->host, v->port, v->weight)
          != MEMCACHED_SUCCESS) {
        fprintf(stderr, "add %s failed\n", v->host);
        return 1;
      }
      map[s][n++] = k;
    }
    if (SETS[s].skip >= 0) printf(" (index %d down)", SETS[s].skip);
    printf("\n");
  }
  printf("key_hex");
  for (size_t s = 0; s < NSETS; s++) printf("\t%s", SETS[s].name);
  printf("\n");
  for (int i = 0; i < NKEYS; i++) {
    unsigned char key[256];
    size_t len = make_key(i, key);
    for (size_t j = 0; j < len; j++) printf("%02x", key[j]);
    for (size_t s = 0; s < NSETS; s++)
      printf("\t%d", map[s][memcached_generate_hash(memc[s], (const char *)key, len)]);
    printf("\n");
  }
  for (size_t s = 0; s < NSETS; s++) memcached_free(memc[s]);
  return 0;
}
