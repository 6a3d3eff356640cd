/* A do-nothing FUSE file system in C (libfuse3 low-level API, one thread):
 * the floor nvmefs is measured against (bench/floor.py).
 *
 *     nothing MOUNTPOINT [JSON_SIZE]
 *
 * The same tree as bench/floor/nothing.py, with the same shape as nvmefs gives
 * it (paths, modes, entry and attribute timeouts, direct_io, no flush handler,
 * mount options), and no work at all:
 *
 *     nvme0/identify          4096 fixed bytes
 *     nvme0/identify.json     JSON_SIZE fixed bytes (default 2735, the sim's size)
 *     nvme0/passthru/io       a mailbox: each write of k x 64 bytes makes
 *                             k x 4112 bytes (zeros) readable on that open file
 *
 * Serves with fuse_session_loop (single-threaded) until unmounted, SIGINT or SIGTERM.
 */

#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REQUEST 64
#define ANSWER (16 + 4096)
#define ZEROS_SIZE (1 << 20)    /* larger than any FUSE read (max_pages 256) */

enum { ROOT = FUSE_ROOT_ID, CTRL, IDENTIFY, IDENTIFY_JSON, PASSTHRU, IO, NODES };

struct node {
    const char *name;
    fuse_ino_t parent;
    mode_t mode;
    double attr_timeout;
    const char *data;           /* file content; NULL for directories and the mailbox */
    size_t size;
};

struct mailbox {
    size_t pending;             /* answer bytes readable */
    size_t partial;             /* bytes of a request not yet whole */
};

static struct node nodes[NODES];
static char identify[4096];
static char *json;
static char zeros[ZEROS_SIZE];
static struct timespec born;

static void setup(size_t json_size)
{
    static const char head[] = "{\n  \"pad\": \"", tail[] = "\"\n}\n";
    size_t fixed = sizeof head - 1 + sizeof tail - 1;
    if (json_size < fixed)
        json_size = fixed;
    json = malloc(json_size);
    if (!json) {
        perror("malloc");
        exit(1);
    }
    memcpy(json, head, sizeof head - 1);
    memset(json + sizeof head - 1, 'x', json_size - fixed);
    memcpy(json + json_size - (sizeof tail - 1), tail, sizeof tail - 1);
    for (size_t i = 0; i < sizeof identify; i++)
        identify[i] = (char)i;
    clock_gettime(CLOCK_REALTIME, &born);

    nodes[ROOT] = (struct node){"", 0, S_IFDIR | 0555, 1.0, NULL, 0};
    nodes[CTRL] = (struct node){"nvme0", ROOT, S_IFDIR | 0555, 1.0, NULL, 0};
    nodes[IDENTIFY] = (struct node){"identify", CTRL, S_IFREG | 0444, 1.0, identify,
                                    sizeof identify};
    nodes[IDENTIFY_JSON] = (struct node){"identify.json", CTRL, S_IFREG | 0444, 0.0, json,
                                         json_size};
    nodes[PASSTHRU] = (struct node){"passthru", CTRL, S_IFDIR | 01777, 1.0, NULL, 0};
    nodes[IO] = (struct node){"io", PASSTHRU, S_IFREG | 0666, 0.0, NULL, 0};
}

static int valid(fuse_ino_t ino)
{
    return ino >= ROOT && ino < NODES;
}

static void fill(fuse_ino_t ino, struct stat *st)
{
    const struct node *n = &nodes[ino];
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = n->mode;
    st->st_nlink = S_ISDIR(n->mode) ? 2 : 1;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_size = (off_t)n->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
    st->st_atim = st->st_mtim = st->st_ctim = born;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    for (fuse_ino_t ino = CTRL; ino < NODES; ino++) {
        if (nodes[ino].parent == parent && strcmp(nodes[ino].name, name) == 0) {
            struct fuse_entry_param e;
            memset(&e, 0, sizeof e);
            e.ino = ino;
            e.attr_timeout = nodes[ino].attr_timeout;
            e.entry_timeout = 1.0;
            fill(ino, &e.attr);
            fuse_reply_entry(req, &e);
            return;
        }
    }
    fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    if (!valid(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill(ino, &st);
    fuse_reply_attr(req, &st, nodes[ino].attr_timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    if (!valid(ino) || ((to_set & FUSE_SET_ATTR_SIZE) && !(ino == IO && attr->st_size == 0))) {
        fuse_reply_err(req, valid(ino) ? EACCES : ENOENT);
        return;
    }
    op_getattr(req, ino, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid(ino) || !S_ISDIR(nodes[ino].mode)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    char buf[4096];
    size_t used = 0;
    off_t index = 0;
    if (size > sizeof buf)
        size = sizeof buf;
    for (fuse_ino_t child = CTRL; child < NODES; child++) {
        if (nodes[child].parent != ino)
            continue;
        if (index++ < off)
            continue;
        struct stat st;
        fill(child, &st);
        size_t need = fuse_add_direntry(req, buf + used, size - used, nodes[child].name, &st,
                                        index);
        if (need > size - used)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (S_ISDIR(nodes[ino].mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (ino == IO) {
        struct mailbox *box = calloc(1, sizeof *box);
        if (!box) {
            fuse_reply_err(req, ENOMEM);
            return;
        }
        fi->fh = (uint64_t)(uintptr_t)box;
    } else if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EACCES);
        return;
    } else {
        fi->fh = 0;
    }
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fi->nonseekable = 0;
    if (fuse_reply_open(req, fi) == -ENOENT && ino == IO)     /* the opener was interrupted */
        free((void *)(uintptr_t)fi->fh);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    if (ino == IO) {
        struct mailbox *box = (struct mailbox *)(uintptr_t)fi->fh;
        size_t n = size < box->pending ? size : box->pending;
        if (n > ZEROS_SIZE)
            n = ZEROS_SIZE;
        box->pending -= n;
        fuse_reply_buf(req, zeros, n);
        return;
    }
    const struct node *node = &nodes[ino];
    if (off < 0 || (size_t)off >= node->size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = node->size - (size_t)off;
    fuse_reply_buf(req, node->data + off, size < n ? size : n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)buf;
    (void)off;
    if (ino != IO) {
        fuse_reply_err(req, EBADF);
        return;
    }
    struct mailbox *box = (struct mailbox *)(uintptr_t)fi->fh;
    size_t total = box->partial + size;
    box->pending += total / REQUEST * ANSWER;
    box->partial = total % REQUEST;
    fuse_reply_write(req, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino == IO)
        free((void *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MOUNTPOINT [JSON_SIZE]\n", argv[0]);
        return 2;
    }
    setup(argc == 3 ? strtoul(argv[2], NULL, 10) : 2735);

    char *fuse_argv[] = {argv[0], "-o",
                         "fsname=nothing,subtype=nothing,default_permissions,nodev,nosuid", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se)
        return 1;
    int rc = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[1]) == 0) {
            rc = fuse_session_loop(se) ? 1 : 0;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    return rc;
}
