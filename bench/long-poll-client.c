/*
 * The long-poll load generator of bench/long-poll.ts --generator=c: N
 * long-poll clients and the publisher in one single-threaded C process
 * (epoll, non-blocking sockets, one kept-alive HTTP/1.1 connection per
 * client), so that the generator costs a few microseconds per delivery and
 * reads an answer within a millisecond or two of its arrival: what it
 * measures is the server's latency, not the generator's event loop.
 * Compiled by bench/long-poll.ts with `cc -O2` into a temporary directory.
 *
 *   long-poll-client --port=P --protocol=herald|nchan|raw --clients=N --rate=R
 *     --seconds=S [--warmup=3] [--channel=C] [--nchan-id=ID] [--api-key=K] [--batch]
 *
 * The phases are bench/long-poll.ts's: open the clients (200 at a time;
 * Herald: `POST /connection/poll/open`, then the loop of
 * `POST /connection/poll` acknowledging the last `seq`; Nchan:
 * `GET /sub/<id>` with `If-None-Match`/`If-Modified-Since` from the previous
 * answer; raw: `POST /poll` with `{"seq":N}`), wait 2 s, connect a pool of
 * 8 publisher connections, publish the warm-up messages (each after the
 * previous one's answer and 1/rate s), wait 2 s, then publish rate × seconds
 * measured messages at their times (open loop: a publication goes out on an
 * idle pool connection at its time whether or not earlier ones were
 * answered; if none is idle, on the first one that becomes idle), until
 * every delivery arrived or 5 s passed without one.
 *
 * Each payload is bench/lib.ts's `{"s":SEQ,"t":MICROS,"p":"xx…"}` of 100
 * bytes, `t` read from CLOCK_MONOTONIC (the clock of bench/lib.ts's nowUs
 * and of the windows the benchmarks print) just before the request is
 * written; a delivery's latency is from `t` to the clock read right after
 * the `read` that returned the answer.
 *
 * Prints to stdout `start MICROS` when the measured phase begins, `end
 * MICROS` when it is over (the parent samples the server's CPU at both),
 * then one line `result {JSON}` (see print_result; besides the latencies, how
 * long each measured publication took from its write to its answer: how
 * long the server took to read and answer it). Exits 1 with a message
 * on stderr when a client cannot open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum protocol { HERALD, NCHAN, RAW };
enum role { CLIENT, PUBLISHER };
enum phase { OPENING, SETTLE_CLIENTS, CONNECT_POOL, WARMUP, SETTLE_WARMUP, MEASURE, DRAIN, DONE };

#define POOL 8
#define LANES 200
#define PAYLOAD_BYTES 100
#define OUT_MAX 2048

struct conn {
  int fd;
  enum role role;
  int index;
  int connected;
  int opened;   /* Herald: the open answer was read; others: connected */
  int failed;
  int busy;     /* a request is out and its answer not read */
  char *in;
  size_t in_len, in_cap;
  char out[OUT_MAX];
  size_t out_len, out_off;
  long long sent_at;   /* CLOCK_MONOTONIC µs the current poll was written */
  long long seq;       /* Herald/raw: the last seq acknowledged */
  long long published_at; /* publisher: CLOCK_MONOTONIC µs the current publication's `t` */
  char session[128];
  char etag[128];
  char modified[64];
};

static struct {
  int port;
  enum protocol protocol;
  int clients;
  double rate;
  double seconds;
  int warmup;
  const char *channel;
  const char *nchan_id;
  const char *api_key;
  int batch;
} opt = { 0, HERALD, 2000, 25, 10, 3, "bench:fanout", "bench_fanout", "", 0 };

static int epfd, timer_fd;
static struct conn *clients, pool[POOL];
static enum phase phase = OPENING;
static int next_to_open, opened_count, pool_connected, warm_sent, next_publish, messages;
static int publish_queue[1 << 16], queue_head, queue_tail; /* measured seqs waiting for an idle pool connection */
static int publishes_answered; /* measured ones */
static long long began, ended_at, last_progress, last_answer_at;
static long long delivered, expected, polls, held_count;
static uint8_t *seen;
static int total; /* warm-up + measured messages */
static uint32_t *lat, *held, *queued, *turnaround, *between;
static size_t n_held, n_queued;
static uint32_t *passes, *lateness, *publish_rtt;
static size_t n_passes, cap_passes, n_lateness, n_publish_rtt;
static char errors[5][200];
static int n_errors;
static struct rusage usage_start;

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *format, ...) {
  va_list args;
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
  fputc('\n', stderr);
  exit(1);
}

static void error_note(const char *format, ...) {
  if (n_errors >= 5 || phase == DONE) return;
  va_list args;
  va_start(args, format);
  vsnprintf(errors[n_errors], sizeof errors[0], format, args);
  va_end(args);
  for (char *p = errors[n_errors]; *p; p++)
    if (*p == '"' || *p == '\\' || (unsigned char)*p < 32) *p = ' ';
  n_errors++;
}

static void arm_timer_at(long long at_us) {
  struct itimerspec spec = { { 0, 0 }, { at_us / 1000000, (at_us % 1000000) * 1000 } };
  if (at_us <= 0) spec.it_value.tv_nsec = 1;
  if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) die("timerfd_settime: %s", strerror(errno));
}

static void watch(struct conn *c, int op, int out) {
  struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0), .data.ptr = c };
  if (epoll_ctl(epfd, op, c->fd, &ev) != 0) die("epoll_ctl: %s", strerror(errno));
}

static void open_socket(struct conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(opt.port) };
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&address, sizeof address) != 0 && errno != EINPROGRESS) die("connect: %s", strerror(errno));
  c->connected = 0;
  watch(c, EPOLL_CTL_ADD, 1);
}

/** Writes what is left of c->out; waits for EPOLLOUT when the socket is full. */
static void flush_out(struct conn *c) {
  if (!c->connected) return;
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n > 0) {
      c->out_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      watch(c, EPOLL_CTL_MOD, 1);
      return;
    }
    error_note("write: %s", strerror(errno));
    c->failed = 1;
    return;
  }
}

static void send_request(struct conn *c, const char *method, const char *path, const char *headers, const char *body) {
  size_t body_len = body == NULL ? 0 : strlen(body);
  int n = body == NULL ? snprintf(c->out, OUT_MAX, "%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n%s\r\n", method, path, opt.port, headers)
                       : snprintf(c->out, OUT_MAX, "%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n%scontent-length: %zu\r\n\r\n%s", method, path, opt.port, headers, body_len, body);
  if (n <= 0 || n >= OUT_MAX) die("request too long");
  c->out_len = (size_t)n;
  c->out_off = 0;
  c->busy = 1;
  flush_out(c);
}

static void send_poll(struct conn *c) {
  char headers[512], body[64], path[256];
  c->sent_at = now_us();
  if (phase == MEASURE || phase == DRAIN) polls++;
  switch (opt.protocol) {
  case HERALD:
    snprintf(headers, sizeof headers, "content-type: application/json\r\nherald-session: %s\r\n", c->session);
    snprintf(body, sizeof body, "{\"seq\":%lld}", c->seq);
    send_request(c, "POST", "/connection/poll", headers, body);
    break;
  case RAW:
    snprintf(body, sizeof body, "{\"seq\":%lld}", c->seq);
    send_request(c, "POST", "/poll", "content-type: application/json\r\n", body);
    break;
  case NCHAN:
    if (c->etag[0] != 0 && c->modified[0] != 0) snprintf(headers, sizeof headers, "if-none-match: %s\r\nif-modified-since: %s\r\n", c->etag, c->modified);
    else headers[0] = 0;
    snprintf(path, sizeof path, "/sub/%s", opt.nchan_id);
    send_request(c, "GET", path, headers, NULL);
    break;
  }
}

static void send_open(struct conn *c) {
  char body[256];
  snprintf(body, sizeof body, opt.batch ? "{\"channels\":[\"%s\"],\"batch\":true}" : "{\"channels\":[\"%s\"]}", opt.channel);
  send_request(c, "POST", "/connection/poll/open", "content-type: application/json\r\n", body);
}

static void publish(struct conn *c, int seq) {
  char payload[PAYLOAD_BYTES + 1], body[512], headers[512], path[256];
  c->published_at = now_us();
  int bare = snprintf(payload, sizeof payload, "{\"s\":%d,\"t\":%lld,\"p\":\"", seq, c->published_at);
  int pad = PAYLOAD_BYTES - bare - 2;
  if (pad < 0) die("payload header too long");
  memset(payload + bare, 'x', (size_t)pad);
  memcpy(payload + bare + pad, "\"}", 3);
  switch (opt.protocol) {
  case HERALD:
    snprintf(body, sizeof body, "{\"channel\":\"%s\",\"data\":%s}", opt.channel, payload);
    snprintf(headers, sizeof headers, "content-type: application/json\r\nauthorization: Bearer %s\r\n", opt.api_key);
    send_request(c, "POST", "/api/publish", headers, body);
    break;
  case RAW:
    send_request(c, "POST", "/publish", "content-type: application/json\r\n", payload);
    break;
  case NCHAN:
    snprintf(path, sizeof path, "/pub/%s", opt.nchan_id);
    send_request(c, "POST", path, "content-type: application/json\r\n", payload);
    break;
  }
}

static struct conn *idle_publisher(void) {
  for (int i = 0; i < POOL; i++)
    if (pool[i].connected && !pool[i].busy && !pool[i].failed) return &pool[i];
  return NULL;
}

/** The value of header `name` in the head (case-insensitive name), or NULL; its length in *len. */
static const char *header(const char *head, size_t head_len, const char *name, size_t *len) {
  size_t name_len = strlen(name);
  const char *end = head + head_len;
  const char *line = memchr(head, '\n', head_len);
  while (line != NULL && line + 1 < end) {
    line++;
    const char *eol = memchr(line, '\r', (size_t)(end - line));
    if (eol == NULL) eol = end;
    if ((size_t)(eol - line) > name_len && line[name_len] == ':' && strncasecmp(line, name, name_len) == 0) {
      const char *value = line + name_len + 1;
      while (value < eol && *value == ' ') value++;
      *len = (size_t)(eol - value);
      return value;
    }
    line = memchr(line, '\n', (size_t)(end - line));
  }
  return NULL;
}

static long long number_after(const char *body, size_t len, const char *key) {
  const char *at = memmem(body, len, key, strlen(key));
  if (at == NULL) return -1;
  at += strlen(key);
  long long value = 0;
  while (at < body + len && *at >= '0' && *at <= '9') value = value * 10 + (*at++ - '0');
  return value;
}

/** Every payload `{"s":SEQ,"t":MICROS` in the body: one delivery each (counted once per client and message). */
static void deliveries(struct conn *c, const char *body, size_t len, long long now) {
  static const char key[] = "{\"s\":";
  const char *end = body + len;
  const char *at = body;
  while ((at = memmem(at, (size_t)(end - at), key, sizeof key - 1)) != NULL) {
    at += sizeof key - 1;
    long long s = 0, t = 0;
    while (at < end && *at >= '0' && *at <= '9') s = s * 10 + (*at++ - '0');
    if (end - at < 5 || memcmp(at, ",\"t\":", 5) != 0) continue;
    at += 5;
    while (at < end && *at >= '0' && *at <= '9') t = t * 10 + (*at++ - '0');
    if (s >= total) continue;
    size_t slot = (size_t)c->index * (size_t)total + (size_t)s;
    if (seen[slot]) continue;
    seen[slot] = 1;
    if (s < opt.warmup) continue;
    uint32_t latency = (uint32_t)(now > t ? now - t : 0);
    lat[delivered++] = latency;
    last_progress = now;
    if (t >= c->sent_at) {
      held_count++;
      held[n_held++] = latency;
    } else {
      queued[n_queued] = latency;
      turnaround[n_queued] = (uint32_t)(now - c->sent_at);
      between[n_queued++] = (uint32_t)(c->sent_at - t);
    }
  }
}

static void start_measuring(void);

static void on_publish_answer(struct conn *c, int status) {
  if (status >= 300) error_note("publish %d", status);
  if (phase == WARMUP) {
    arm_timer_at(now_us() + (long long)(1e6 / opt.rate));
    return;
  }
  if (phase == MEASURE || phase == DRAIN) {
    publishes_answered++;
    publish_rtt[n_publish_rtt++] = (uint32_t)(now_us() - c->published_at);
    if (queue_head != queue_tail) publish(c, publish_queue[queue_head++ & 0xffff]);
  }
}

static void on_answer(struct conn *c, int status, const char *head, size_t head_len, const char *body, size_t body_len, long long now) {
  c->busy = 0;
  if (c->role == PUBLISHER) {
    on_publish_answer(c, status);
    return;
  }
  if (opt.protocol == HERALD && !c->opened) {
    if (status != 200) die("poll/open %d: %.*s", status, (int)(body_len > 160 ? 160 : body_len), body);
    const char *at = memmem(body, body_len, "\"session\":\"", 11);
    if (at == NULL) die("poll/open: no session in %.*s", (int)(body_len > 160 ? 160 : body_len), body);
    at += 11;
    const char *quote = memchr(at, '"', (size_t)(body + body_len - at));
    if (quote == NULL || quote - at >= (long)sizeof c->session) die("poll/open: bad session");
    memcpy(c->session, at, (size_t)(quote - at));
    c->session[quote - at] = 0;
    c->seq = number_after(body, body_len, "\"seq\":");
    c->opened = 1;
    opened_count++;
    send_poll(c);
    return;
  }
  if (phase == DONE) return;
  if (opt.protocol == NCHAN) {
    if (status == 200) deliveries(c, body, body_len, now);
    size_t etag_len, modified_len;
    const char *etag = header(head, head_len, "etag", &etag_len);
    const char *modified = header(head, head_len, "last-modified", &modified_len);
    if (etag != NULL && modified != NULL && etag_len < sizeof c->etag && modified_len < sizeof c->modified) {
      memcpy(c->etag, etag, etag_len);
      c->etag[etag_len] = 0;
      memcpy(c->modified, modified, modified_len);
      c->modified[modified_len] = 0;
    }
  } else {
    if (status != 200) {
      error_note("poll %d: %.*s", status, (int)(body_len > 120 ? 120 : body_len), body);
      c->failed = 1;
      return;
    }
    long long seq = number_after(body, body_len, "\"seq\":");
    deliveries(c, body, body_len, now);
    if (seq > c->seq || opt.protocol == RAW) c->seq = seq;
  }
  send_poll(c);
}

static void reconnect(struct conn *c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  open_socket(c);
}

/** Handles every complete answer in c->in. After `Connection: close` the next request goes out on a new connection. */
static void parse_answers(struct conn *c, long long now) {
  size_t off = 0;
  int close_after = 0;
  while (off < c->in_len && !close_after) {
    char *buf = c->in + off;
    size_t len = c->in_len - off;
    char *head_end = memmem(buf, len, "\r\n\r\n", 4);
    if (head_end == NULL) break;
    size_t head_len = (size_t)(head_end - buf);
    int status = len > 12 ? atoi(buf + 9) : 0;
    size_t value_len;
    const char *value = header(buf, head_len, "content-length", &value_len);
    char *body = head_end + 4;
    size_t body_len, used;
    if (value != NULL) {
      body_len = (size_t)strtoul(value, NULL, 10);
      if (head_len + 4 + body_len > len) break;
      used = head_len + 4 + body_len;
    } else if ((value = header(buf, head_len, "transfer-encoding", &value_len)) != NULL && value_len >= 7 && strncasecmp(value, "chunked", 7) == 0) {
      /* De-chunk in place: the body's bytes move down over the size lines. */
      char *read = body, *write = body, *end = buf + len;
      int complete = 0;
      for (;;) {
        char *eol = memmem(read, (size_t)(end - read), "\r\n", 2);
        if (eol == NULL) break;
        size_t size = strtoul(read, NULL, 16);
        if ((size_t)(end - eol) < 2 + size + 2) break;
        memmove(write, eol + 2, size);
        write += size;
        read = eol + 2 + size + 2;
        if (size == 0) {
          complete = 1;
          break;
        }
      }
      if (!complete) break; /* the size lines are intact until the answer is complete: the next read starts over */
      body_len = (size_t)(write - body);
      used = (size_t)(read - buf);
    } else {
      body_len = 0;
      used = head_len + 4;
    }
    const char *connection = header(buf, head_len, "connection", &value_len);
    if (connection != NULL && value_len == 5 && strncasecmp(connection, "close", 5) == 0) {
      close_after = 1;
      reconnect(c); /* before the answer is handled: the request it sends waits for the new connection */
    }
    on_answer(c, status, buf, head_len, body, body_len, now);
    off += used;
  }
  if (close_after) c->in_len = 0;
  else if (off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
}

static void on_readable(struct conn *c) {
  long long now = 0;
  for (;;) {
    if (c->in_cap - c->in_len < 4096) {
      c->in_cap = c->in_cap == 0 ? 16384 : c->in_cap * 2;
      c->in = realloc(c->in, c->in_cap);
      if (c->in == NULL) die("out of memory");
    }
    size_t room = c->in_cap - c->in_len;
    ssize_t n = read(c->fd, c->in + c->in_len, room);
    if (n > 0) {
      if (now == 0) now = now_us();
      c->in_len += (size_t)n;
      if ((size_t)n < room) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    /* closed or failed */
    if (phase != DONE) error_note("%s %d: %s", c->role == PUBLISHER ? "publisher" : "client", c->index, n == 0 ? "connection closed" : strerror(errno));
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->failed = 1;
    return;
  }
  if (now != 0) parse_answers(c, now);
}

static void next_lane(void) {
  while (next_to_open < opt.clients && next_to_open - opened_count < LANES) {
    struct conn *c = &clients[next_to_open];
    c->index = next_to_open++;
    c->role = CLIENT;
    open_socket(c);
  }
}

static void on_connected(struct conn *c) {
  int error = 0;
  socklen_t len = sizeof error;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
  if (error != 0) die("connect: %s", strerror(error));
  c->connected = 1;
  watch(c, EPOLL_CTL_MOD, 0);
  if (c->out_off < c->out_len) {
    flush_out(c); /* a request written before a reconnect */
    return;
  }
  if (c->role == PUBLISHER) {
    if (++pool_connected == POOL && phase == CONNECT_POOL) {
      phase = WARMUP;
      publish(&pool[0], warm_sent++);
    }
    return;
  }
  if (opt.protocol == HERALD) send_open(c);
  else {
    c->opened = 1;
    opened_count++;
    send_poll(c);
  }
}

static void start_measuring(void) {
  phase = MEASURE;
  delivered = polls = held_count = 0;
  getrusage(RUSAGE_SELF, &usage_start);
  began = now_us();
  last_progress = began;
  printf("start %lld\n", began);
  fflush(stdout);
}

static void publish_due(long long now) {
  while (next_publish < messages && began + (long long)(next_publish * 1e6 / opt.rate) <= now) {
    long long due = began + (long long)(next_publish * 1e6 / opt.rate);
    lateness[n_lateness++] = (uint32_t)(now - due);
    struct conn *c = idle_publisher();
    int seq = opt.warmup + next_publish++;
    if (c != NULL) publish(c, seq);
    else publish_queue[queue_tail++ & 0xffff] = seq;
  }
  if (next_publish < messages) arm_timer_at(began + (long long)(next_publish * 1e6 / opt.rate));
  else phase = DRAIN;
}

static void on_timer(long long now) {
  uint64_t expirations;
  if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read: %s", strerror(errno));
  switch (phase) {
  case SETTLE_CLIENTS:
    phase = CONNECT_POOL;
    for (int i = 0; i < POOL; i++) {
      pool[i].role = PUBLISHER;
      pool[i].index = i;
      open_socket(&pool[i]);
    }
    break;
  case WARMUP:
    if (warm_sent < opt.warmup) {
      struct conn *c = idle_publisher();
      if (c == NULL) die("no idle publisher in the warm-up");
      publish(c, warm_sent++);
    } else {
      phase = SETTLE_WARMUP;
      arm_timer_at(now + 2000000);
    }
    break;
  case SETTLE_WARMUP:
    start_measuring();
    publish_due(now_us());
    break;
  case MEASURE:
    publish_due(now);
    break;
  default:
    break;
  }
}

static int compare_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/** The q-quantile (nearest rank) of n values in ms, sorting them; NaN printed as null. */
static void print_quantile(const char *name, uint32_t *values, size_t n, double q) {
  if (n == 0) {
    printf("\"%s\":null,", name);
    return;
  }
  qsort(values, n, sizeof *values, compare_u32);
  size_t rank = (size_t)(q * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  printf("\"%s\":%.3f,", name, values[rank - 1] / 1000.0);
}

static void print_result(const struct rusage *usage_end) {
  double cpu = (double)(usage_end->ru_utime.tv_sec - usage_start.ru_utime.tv_sec) + (usage_end->ru_utime.tv_usec - usage_start.ru_utime.tv_usec) / 1e6;
  double system = (double)(usage_end->ru_stime.tv_sec - usage_start.ru_stime.tv_sec) + (usage_end->ru_stime.tv_usec - usage_start.ru_stime.tv_usec) / 1e6;
  printf("result {\"delivered\":%lld,\"expected\":%lld,\"polls\":%lld,\"heldCount\":%lld,", delivered, expected, polls, held_count);
  printf("\"publishSeconds\":%.6f,\"seconds\":%.6f,\"from\":%lld,\"to\":%lld,", (last_answer_at - began) / 1e6, (ended_at - began) / 1e6, began, ended_at);
  printf("\"cpuSeconds\":%.6f,\"systemCpuSeconds\":%.6f,\"passes\":%zu,", cpu + system, system, n_passes);
  print_quantile("p50ms", lat, (size_t)delivered, 0.5);
  print_quantile("p99ms", lat, (size_t)delivered, 0.99);
  print_quantile("p999ms", lat, (size_t)delivered, 0.999);
  print_quantile("maxms", lat, (size_t)delivered, 1);
  print_quantile("heldP99ms", held, n_held, 0.99);
  print_quantile("queuedP99ms", queued, n_queued, 0.99);
  print_quantile("turnaroundP99ms", turnaround, n_queued, 0.99);
  print_quantile("betweenP99ms", between, n_queued, 0.99);
  print_quantile("passP99ms", passes, n_passes, 0.99);
  print_quantile("passMaxMs", passes, n_passes, 1);
  print_quantile("publishP50ms", publish_rtt, n_publish_rtt, 0.5);
  print_quantile("publishP99ms", publish_rtt, n_publish_rtt, 0.99);
  print_quantile("publishMaxMs", publish_rtt, n_publish_rtt, 1);
  print_quantile("lateP99ms", lateness, n_lateness, 0.99);
  print_quantile("lateMaxMs", lateness, n_lateness, 1);
  printf("\"errors\":[");
  for (int i = 0; i < n_errors; i++) printf("%s\"%s\"", i == 0 ? "" : ",", errors[i]);
  printf("]}\n");
  fflush(stdout);
}

static const char *flag(int argc, char **argv, const char *name) {
  size_t len = strlen(name);
  for (int i = 1; i < argc; i++)
    if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=') return argv[i] + len + 1;
  return NULL;
}

int main(int argc, char **argv) {
  const char *value;
  if ((value = flag(argc, argv, "--port")) != NULL) opt.port = atoi(value);
  if ((value = flag(argc, argv, "--protocol")) != NULL) opt.protocol = strcmp(value, "nchan") == 0 ? NCHAN : strcmp(value, "raw") == 0 ? RAW : HERALD;
  if ((value = flag(argc, argv, "--clients")) != NULL) opt.clients = atoi(value);
  if ((value = flag(argc, argv, "--rate")) != NULL) opt.rate = atof(value);
  if ((value = flag(argc, argv, "--seconds")) != NULL) opt.seconds = atof(value);
  if ((value = flag(argc, argv, "--warmup")) != NULL) opt.warmup = atoi(value);
  if ((value = flag(argc, argv, "--channel")) != NULL) opt.channel = value;
  if ((value = flag(argc, argv, "--nchan-id")) != NULL) opt.nchan_id = value;
  if ((value = flag(argc, argv, "--api-key")) != NULL) opt.api_key = value;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--batch") == 0) opt.batch = 1;
  if (opt.port <= 0 || opt.clients <= 0 || opt.rate <= 0 || opt.seconds <= 0) die("usage: long-poll-client --port=P --protocol=herald|nchan|raw --clients=N --rate=R --seconds=S [--warmup=3] [--channel=C] [--nchan-id=ID] [--api-key=K] [--batch]");
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < (rlim_t)opt.clients + 64) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  messages = (int)(opt.rate * opt.seconds + 0.5);
  if (messages >= 0xffff) die("too many messages for the publish queue");
  total = opt.warmup + messages;
  expected = (long long)opt.clients * messages;
  clients = calloc((size_t)opt.clients, sizeof *clients);
  seen = calloc((size_t)opt.clients * (size_t)total, 1);
  lat = malloc((size_t)expected * sizeof *lat);
  held = malloc((size_t)expected * sizeof *held);
  queued = malloc((size_t)expected * sizeof *queued);
  turnaround = malloc((size_t)expected * sizeof *turnaround);
  between = malloc((size_t)expected * sizeof *between);
  lateness = malloc((size_t)messages * sizeof *lateness);
  publish_rtt = malloc((size_t)messages * sizeof *publish_rtt);
  cap_passes = 1 << 16;
  passes = malloc(cap_passes * sizeof *passes);
  if (!clients || !seen || !lat || !held || !queued || !turnaround || !between || !lateness || !publish_rtt || !passes) die("out of memory");

  epfd = epoll_create1(EPOLL_CLOEXEC);
  timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct epoll_event timer_event = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &timer_event);
  next_lane();

  struct epoll_event events[256];
  long long open_deadline = now_us() + 60000000;
  while (phase != DONE) {
    int timeout = phase == DRAIN ? 50 : phase == OPENING ? 1000 : -1;
    int n = epoll_wait(epfd, events, 256, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    long long pass_start = now_us();
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      if (c == NULL) {
        on_timer(pass_start);
        continue;
      }
      if (c->fd < 0) continue;
      if (!c->connected && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        on_connected(c);
        continue;
      }
      if (events[i].events & EPOLLOUT) {
        watch(c, EPOLL_CTL_MOD, 0);
        flush_out(c);
      }
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) on_readable(c);
    }
    long long pass_end = now_us();
    if (phase == MEASURE || phase == DRAIN) {
      if (n_passes == cap_passes) {
        cap_passes *= 2;
        passes = realloc(passes, cap_passes * sizeof *passes);
        if (passes == NULL) die("out of memory");
      }
      passes[n_passes++] = (uint32_t)(pass_end - pass_start);
    }
    switch (phase) {
    case OPENING:
      next_lane();
      if (opened_count == opt.clients) {
        phase = SETTLE_CLIENTS;
        arm_timer_at(pass_end + 2000000);
      } else if (pass_end > open_deadline) die("only %d of %d clients opened in 60 s", opened_count, opt.clients);
      break;
    case DRAIN:
      if (publishes_answered == messages && last_answer_at == 0) last_answer_at = pass_end;
      if (publishes_answered == messages && (delivered >= expected || pass_end - last_progress >= 5000000)) phase = DONE;
      else if (pass_end - last_progress >= 30000000) phase = DONE;
      break;
    default:
      break;
    }
  }
  struct rusage usage_end;
  getrusage(RUSAGE_SELF, &usage_end);
  ended_at = now_us();
  printf("end %lld\n", ended_at);
  fflush(stdout);
  print_result(&usage_end);
  return 0;
}
