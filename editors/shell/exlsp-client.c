/* exlsp-client: a tiny client of the exlsp Unix socket for bash, fish and scripts.
 *
 *   exlsp-client [options] suggest  LINE   print the first suggestion for a partial command line
 *                                          (`complete` is the same)
 *   exlsp-client [options] describe TEXT   print a command for a description
 *   exlsp-client [options] status          print the status reply (no model involved)
 *   exlsp-client [options] send JSON       send one request line as is, print its terminal reply
 *
 * Options: -s SOCKET  -t TIMEOUT_MS (5000)  -r (print the raw terminal reply line)
 *          -p (porcelain: three lines, risk / text / reason)  -S SHELL  -C CWD  -c CURSOR
 *          -H HISTORY_LINE (repeatable, oldest first)  -x EXIT_STATUS  -n CANDIDATES (1)
 * Exit: 0 answered, 1 no suggestion, 2 usage, 3 no exlsp running, 4 timeout, 5 error reply.
 * Socket: -s, else $EXLSP_SOCKET, else $XDG_RUNTIME_DIR/exlsp/exlsp.sock, else
 * ${TMPDIR:-/tmp}/exlsp-$UID/exlsp.sock (as lsp/socket_paths.py); a server of another user is
 * refused (exit 3) before anything is sent. It never runs what it prints.
 * Build: cc -O2 -o exlsp-client exlsp-client.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct { char *p; size_t n, cap; } Buf;

static void put(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        if (!(b->p = realloc(b->p, b->cap))) { perror("exlsp-client"); exit(5); }
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_json(Buf *b, const char *s) { /* a JSON string, quotes included */
    char esc[8];
    puts_(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') { esc[0] = '\\'; esc[1] = (char)*c; put(b, esc, 2); }
        else if (*c == '\n') puts_(b, "\\n");
        else if (*c == '\t') puts_(b, "\\t");
        else if (*c == '\r') puts_(b, "\\r");
        else if (*c < 0x20 || *c == 0x7f) { snprintf(esc, sizeof esc, "\\u%04x", *c); puts_(b, esc); }
        else put(b, (const char *)c, 1);
    }
    puts_(b, "\"");
}

static void put_utf8(Buf *b, unsigned cp) {
    char u[4];
    if (cp < 0x80) { u[0] = (char)cp; put(b, u, 1); }
    else if (cp < 0x800) { u[0] = (char)(0xc0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3f)); put(b, u, 2); }
    else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[2] = (char)(0x80 | (cp & 0x3f)); put(b, u, 3);
    } else {
        u[0] = (char)(0xf0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); put(b, u, 4);
    }
}

static const char *hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++, p++) {
        char c = *p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return NULL;
        *v = *v * 16 + (unsigned)d;
    }
    return p;
}

/* Decode the JSON string starting at the quote p into out; returns the character after it. */
static const char *get_json(const char *p, Buf *out) {
    if (*p++ != '"') return NULL;
    out->n = 0;
    put(out, "", 0);
    for (; *p && *p != '"'; p++) {
        if (*p != '\\') { put(out, p, 1); continue; }
        switch (*++p) {
        case 'n': puts_(out, "\n"); break;
        case 't': puts_(out, "\t"); break;
        case 'r': puts_(out, "\r"); break;
        case 'b': puts_(out, "\b"); break;
        case 'f': puts_(out, "\f"); break;
        case 'u': {
            unsigned cp, lo;
            if (!(p = hex4(p + 1, &cp))) return NULL;
            if (cp >= 0xd800 && cp < 0xdc00 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            put_utf8(out, cp);
            p--;
            break;
        }
        case 0: return NULL;
        default: put(out, p, 1); /* \" \\ \/ */
        }
    }
    return *p == '"' ? p + 1 : NULL;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void socket_path(char *out, size_t size) {
    const char *env = getenv("EXLSP_SOCKET"), *home = getenv("HOME");
    if (env && *env) {
        if (env[0] == '~' && env[1] == '/' && home) snprintf(out, size, "%s%s", home, env + 1);
        else snprintf(out, size, "%s", env);
        return;
    }
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(out, size, "%s/exlsp/exlsp.sock", xdg);
        return;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(out, size, "%s/exlsp-%u/exlsp.sock", tmp && *tmp ? tmp : "/tmp", (unsigned)getuid());
}

static int usage(void) {
    fputs("usage: exlsp-client [-s SOCKET] [-t MS] [-r] [-p] [-S SHELL] [-C CWD] [-c CURSOR] [-H LINE]... [-x STATUS]\n"
          "                    [-n N] suggest LINE | describe TEXT | status | send JSON\n", stderr);
    return 2;
}

int main(int argc, char **argv) {
    char path[4096] = "", *shell = "bash", *cwd = NULL, *exit_status = NULL, *cursor = NULL;
    int timeout_ms = 5000, raw = 0, porcelain = 0, candidates = 1, opt;
    Buf hist = {0}, req = {0};
    puts_(&hist, "[");
    while ((opt = getopt(argc, argv, "+s:t:rpS:C:c:H:x:n:h")) != -1) {
        switch (opt) {
        case 's': snprintf(path, sizeof path, "%s", optarg); break;
        case 't': timeout_ms = atoi(optarg); break;
        case 'r': raw = 1; break;
        case 'p': porcelain = 1; break;
        case 'S': shell = optarg; break;
        case 'C': cwd = optarg; break;
        case 'c': cursor = optarg; break;
        case 'H': if (hist.n > 1) puts_(&hist, ","); put_json(&hist, optarg); break;
        case 'x': exit_status = optarg; break;
        case 'n': candidates = atoi(optarg); break;
        default: return usage();
        }
    }
    puts_(&hist, "]");
    if (optind >= argc) return usage();
    const char *cmd = argv[optind], *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
    int suggesting = !strcmp(cmd, "suggest") || !strcmp(cmd, "complete") || !strcmp(cmd, "describe");
    if (suggesting && arg) {
        char num[32];
        puts_(&req, "{\"type\":\"suggest\",\"id\":1,\"buffer\":");
        put_json(&req, arg);
        if (!strcmp(cmd, "describe")) puts_(&req, ",\"mode\":\"describe\"");
        puts_(&req, ",\"shell\":");
        put_json(&req, shell);
        if (cwd) { puts_(&req, ",\"cwd\":"); put_json(&req, cwd); }
        if (cursor && *cursor) { puts_(&req, ",\"cursor\":"); snprintf(num, sizeof num, "%d", atoi(cursor)); puts_(&req, num); }
        if (exit_status && *exit_status) { puts_(&req, ",\"exit_status\":"); snprintf(num, sizeof num, "%d", atoi(exit_status)); puts_(&req, num); }
        snprintf(num, sizeof num, "%d", candidates < 1 ? 1 : candidates > 10 ? 10 : candidates);
        puts_(&req, ",\"history\":"); puts_(&req, hist.p);
        puts_(&req, ",\"candidates\":"); puts_(&req, num); puts_(&req, "}\n");
    } else if (!strcmp(cmd, "status") && !arg) {
        puts_(&req, "{\"type\":\"status\",\"id\":1}\n"); raw = 1;
    } else if (!strcmp(cmd, "send") && arg && !strchr(arg, '\n')) {
        puts_(&req, arg); puts_(&req, "\n"); raw = 1;
    } else return usage();

    if (!*path) socket_path(path, sizeof path);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) { fprintf(stderr, "exlsp-client: socket path too long: %s\n", path); return 3; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "exlsp: no exlsp process is running (socket %s)\n", path);
        return 3;
    }
#ifdef SO_PEERCRED
    /* Only our own user's exlsp: in a shared /tmp another user may have created the directory
     * first and listen there, to read the line and the history we send. */
    struct ucred cred;
    socklen_t cred_len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0 || cred.uid != getuid()) {
        fprintf(stderr, "exlsp: the socket %s is served by another user, not by you; not used\n", path);
        return 3;
    }
#endif
    double deadline = now_ms() + timeout_ms;
    for (size_t off = 0; off < req.n;) {
        ssize_t w = send(fd, req.p + off, req.n - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EINTR) { fprintf(stderr, "exlsp: the exlsp process closed the connection\n"); return 5; }
        if (w > 0) off += (size_t)w;
    }
    /* Read lines until the terminal reply (a request gets deltas first, then done/error/cancelled). */
    Buf in = {0};
    put(&in, "", 0);
    char chunk[65536], *line = NULL;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(in.p + start, '\n', in.n - start);
        if (nl) {
            *nl = 0;
            line = in.p + start;
            start = (size_t)(nl - in.p) + 1;
            if (strncmp(line, "{\"type\":\"delta\"", 15)) break;
            continue;
        }
        int left = (int)(deadline - now_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int ready = left > 0 ? poll(&pfd, 1, left) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) { fprintf(stderr, "exlsp: no answer within %d ms\n", timeout_ms); return 4; }
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { fprintf(stderr, "exlsp: the exlsp process closed the connection\n"); return 5; }
        if (in.n > (64u << 20)) { fprintf(stderr, "exlsp: a reply longer than 64 MiB\n"); return 5; }
        put(&in, chunk, (size_t)r);
    }
    close(fd);
    int done = !strncmp(line, "{\"type\":\"done\"", 14);
    if (raw) { printf("%s\n", line); return done ? 0 : 5; }
    if (!done) {
        Buf msg = {0};
        const char *m = strstr(line, "\"message\":");
        if (m && get_json(m + 10, &msg)) fprintf(stderr, "exlsp: %s\n", msg.p);
        else fprintf(stderr, "exlsp: %s\n", line);
        return 5;
    }
    /* The first suggestion: an object of string fields (text, risk, reason), in any order. */
    Buf key = {0}, val = {0}, text = {0}, risk = {0}, reason = {0};
    const char *p = strstr(line, "\"suggestions\":[{");
    if (!p) { fprintf(stderr, "exlsp: no suggestion\n"); return 1; }
    for (p += 16; p && *p == '"';) {
        if (!(p = get_json(p, &key)) || *p++ != ':' || !(p = get_json(p, &val))) break;
        Buf *dst = !strcmp(key.p, "text") ? &text : !strcmp(key.p, "risk") ? &risk : !strcmp(key.p, "reason") ? &reason : NULL;
        if (dst) { dst->n = 0; put(dst, val.p, val.n); }
        if (*p == ',') p++;
    }
    if (!text.p || !*text.p) { fprintf(stderr, "exlsp: unreadable reply: %s\n", line); return 5; }
    /* The server strips control characters; strip them again (a line must stay one line). */
    Buf *fields[] = {&text, &risk, &reason};
    for (int i = 0; i < 3; i++)
        for (char *c = fields[i]->p; c && *c; c++) if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    if (porcelain) printf("%s\n%s\n%s\n", risk.p ? risk.p : "low", text.p, reason.p ? reason.p : "");
    else printf("%s\n", text.p);
    return 0;
}
