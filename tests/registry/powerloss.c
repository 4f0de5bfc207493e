/* Power loss, simulated for one process's files: an LD_PRELOAD shim for the durability test.
 *
 * A kill -9 loses nothing that reached the page cache, so it cannot tell a store that fsyncs each
 * commit from one that never does. A power cut can: it keeps exactly what was fsynced. This shim keeps,
 * beside each file whose path starts with SHOAL_POWERLOSS_PREFIX (the database and its -wal; not the
 * -shm index, which SQLite rebuilds), a copy "<file>.durable" that changes only when the file is
 * fsynced or fdatasynced: the bytes written since the last sync are copied into it then, and its size
 * set to the file's. After the process dies, the .durable files are what a disk that lost power would
 * hold. Directory entries are taken as durable at once: a file unlinked (SQLite's rollback journal
 * when it commits) takes its .durable copy with it.
 *
 * Build: gcc -shared -fPIC -O2 -o powerloss.so powerloss.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAXFD 4096

struct range {
    off_t off;
    size_t len;
};

struct tracked {
    int shadow; /* fd of <path>.durable, -1 when untracked */
    struct range *r;
    size_t n, cap;
};

static struct tracked fds[MAXFD];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int ready;

static int (*real_open64)(const char *, int, ...);
static int (*real_open)(const char *, int, ...);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_unlink)(const char *);

static void init(void) {
    if (ready) return;
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_open = dlsym(RTLD_NEXT, "open");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_close = dlsym(RTLD_NEXT, "close");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    for (int i = 0; i < MAXFD; i++) fds[i].shadow = -1;
    ready = 1;
}

static int wanted(const char *path) {
    const char *prefix = getenv("SHOAL_POWERLOSS_PREFIX");
    size_t n = prefix ? strlen(prefix) : 0, len = strlen(path);
    if (!n || strncmp(path, prefix, n) != 0) return 0;
    if (len >= 4 && strcmp(path + len - 4, "-shm") == 0) return 0;
    if (len >= 8 && strcmp(path + len - 8, ".durable") == 0) return 0;
    return 1;
}

static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAXFD || !wanted(path)) return;
    char shadow[4200];
    strncpy(shadow, path, 4000);
    shadow[4000] = 0;
    strcat(shadow, ".durable");
    int sfd = real_open64(shadow, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    pthread_mutex_lock(&mu);
    if (fds[fd].shadow >= 0) real_close(fds[fd].shadow);
    fds[fd].shadow = sfd;
    fds[fd].n = 0;
    pthread_mutex_unlock(&mu);
}

static void note(int fd, off_t off, ssize_t len) {
    if (fd < 0 || fd >= MAXFD || len <= 0) return;
    pthread_mutex_lock(&mu);
    struct tracked *t = &fds[fd];
    if (t->shadow >= 0) {
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 64;
            t->r = realloc(t->r, t->cap * sizeof *t->r);
        }
        t->r[t->n++] = (struct range){off, (size_t)len};
    }
    pthread_mutex_unlock(&mu);
}

/* What a sync makes durable: the ranges written since the last one, and the file's size. */
static void synced(int fd) {
    if (fd < 0 || fd >= MAXFD) return;
    pthread_mutex_lock(&mu);
    struct tracked *t = &fds[fd];
    if (t->shadow >= 0) {
        char buf[65536];
        for (size_t i = 0; i < t->n; i++) {
            off_t off = t->r[i].off;
            size_t left = t->r[i].len;
            while (left > 0) {
                ssize_t got = pread(fd, buf, left < sizeof buf ? left : sizeof buf, off);
                if (got <= 0) break;
                real_pwrite64(t->shadow, buf, (size_t)got, off);
                off += got;
                left -= (size_t)got;
            }
        }
        t->n = 0;
        struct stat st;
        if (fstat(fd, &st) == 0) ftruncate(t->shadow, st.st_size);
        real_fsync(t->shadow);
    }
    pthread_mutex_unlock(&mu);
}

static int open_common(int (*fn)(const char *, int, ...), const char *path, int flags, va_list ap) {
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    int fd = fn(path, flags, mode);
    track(fd, path);
    return fd;
}

int open64(const char *path, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    int fd = open_common(real_open64, path, flags, ap);
    va_end(ap);
    return fd;
}

int open(const char *path, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    int fd = open_common(real_open, path, flags, ap);
    va_end(ap);
    return fd;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    init();
    ssize_t w = real_pwrite64(fd, buf, n, off);
    note(fd, off, w);
    return w;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite64(fd, buf, n, off); }

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    off_t at = (fd >= 0 && fd < MAXFD && fds[fd].shadow >= 0) ? lseek(fd, 0, SEEK_CUR) : -1;
    ssize_t w = real_write(fd, buf, n);
    if (at >= 0) note(fd, at, w);
    return w;
}

int fsync(int fd) {
    init();
    int rc = real_fsync(fd);
    if (rc == 0) synced(fd);
    return rc;
}

int fdatasync(int fd) {
    init();
    int rc = real_fdatasync(fd);
    if (rc == 0) synced(fd);
    return rc;
}

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAXFD) {
        pthread_mutex_lock(&mu);
        if (fds[fd].shadow >= 0) {
            real_close(fds[fd].shadow); /* what was never synced is lost, as in a power cut */
            fds[fd].shadow = -1;
            fds[fd].n = 0;
        }
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}

int unlink(const char *path) {
    init();
    int rc = real_unlink(path);
    if (rc == 0 && wanted(path)) {
        char shadow[4200];
        strncpy(shadow, path, 4000);
        shadow[4000] = 0;
        strcat(shadow, ".durable");
        real_unlink(shadow);
    }
    return rc;
}
