"""cffi API-mode build of nvmefs._nvme: Linux NVMe passthrough by ioctl and io_uring.

The C side does what would cost per-command Python work: it turns 64-byte
submission queue entries into `struct nvme_passthru_cmd64` / `nvme_uring_cmd`,
fills and submits a whole batch of uring_cmd SQEs in one call (liburing 2.3 has
no uring_cmd prep helper), and reaps completions in bulk straight into the
batch's slots, telling Python only which batches are complete.
"""

from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef("""
    #define NVME_IOCTL_ADMIN64_CMD ...
    #define NVME_IOCTL_IO64_CMD ...
    #define NVME_IOCTL_ID ...
    #define NVME_IOCTL_RESET ...
    #define NVME_URING_CMD_IO ...
    #define NVME_URING_CMD_ADMIN ...

    struct nvmefs_req {
        const unsigned char *sqe;   /* 64-byte submission queue entry */
        void *data;                 /* data buffer (in or out), or NULL */
        uint32_t data_len;
        uint32_t timeout_ms;
        int fd;                     /* /dev/nvmeX (admin) or /dev/ngXnY (I/O) */
        uint32_t cmd_op;            /* NVME_URING_CMD_ADMIN or NVME_URING_CMD_IO */
    };

    struct nvmefs_batch {
        uint64_t id;                /* the submitter's handle, reported when all are done */
        uint32_t remaining;         /* commands not yet completed */
    };

    struct nvmefs_slot {            /* where one command's completion lands */
        struct nvmefs_batch *batch;
        int32_t res;                /* 0, a positive NVMe status, or -errno */
        uint64_t result;            /* CQE DW0 | DW1 << 32 */
    };

    struct nvmefs_ring;

    int nvmefs_ring_open(struct nvmefs_ring **ring, unsigned entries, int eventfd);
    void nvmefs_ring_close(struct nvmefs_ring *ring);
    int nvmefs_ring_submit(struct nvmefs_ring *ring, const struct nvmefs_req *reqs,
                           struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n);
    int nvmefs_ring_reap(struct nvmefs_ring *ring, uint64_t *done, int max_done, int *reaped);

    int nvmefs_ioctl(int fd, unsigned long request, const unsigned char *sqe, void *data,
                     uint32_t data_len, uint32_t timeout_ms, uint64_t *result);

    void *nvmefs_alloc(size_t size);
    void nvmefs_free(void *p);

    const size_t NVMEFS_PASSTHRU_CMD64_SIZE;
    const size_t NVMEFS_URING_CMD_SIZE;
    const size_t NVMEFS_SQE_SIZE;
""")

ffibuilder.set_source("nvmefs._nvme", r"""
    #include <errno.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <linux/nvme_ioctl.h>
    #include <liburing.h>

    /* struct sizes the kernel ABI fixes (include/uapi/linux/nvme_ioctl.h) */
    _Static_assert(sizeof(struct nvme_passthru_cmd64) == 80, "nvme_passthru_cmd64");
    _Static_assert(sizeof(struct nvme_uring_cmd) == 72, "nvme_uring_cmd");

    const size_t NVMEFS_PASSTHRU_CMD64_SIZE = sizeof(struct nvme_passthru_cmd64);
    const size_t NVMEFS_URING_CMD_SIZE = sizeof(struct nvme_uring_cmd);
    const size_t NVMEFS_SQE_SIZE = sizeof(struct io_uring_sqe);

    struct nvmefs_req {
        const unsigned char *sqe;
        void *data;
        uint32_t data_len;
        uint32_t timeout_ms;
        int fd;
        uint32_t cmd_op;
    };

    struct nvmefs_batch {
        uint64_t id;
        uint32_t remaining;
    };

    struct nvmefs_slot {
        struct nvmefs_batch *batch;
        int32_t res;
        uint64_t result;
    };

    struct nvmefs_ring { struct io_uring ring; };

    static uint32_t le32(const unsigned char *p)
    {
        return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
    }

    /* NVMe SQE (Base 2.0 Figure 88) -> the kernel's command; CID, MPTR and DPTR are the
       kernel's to fill. Both structs lay out opcode..cdw3 and cdw10..cdw15 alike. */
    #define FILL_CMD(c, sqe, data, len, tmo) do {              \
        (c)->opcode = (sqe)[0];                                \
        (c)->flags = (sqe)[1];                                 \
        (c)->nsid = le32((sqe) + 4);                           \
        (c)->cdw2 = le32((sqe) + 8);                           \
        (c)->cdw3 = le32((sqe) + 12);                          \
        (c)->addr = (uint64_t)(uintptr_t)(data);               \
        (c)->data_len = (len);                                 \
        (c)->cdw10 = le32((sqe) + 40);                         \
        (c)->cdw11 = le32((sqe) + 44);                         \
        (c)->cdw12 = le32((sqe) + 48);                         \
        (c)->cdw13 = le32((sqe) + 52);                         \
        (c)->cdw14 = le32((sqe) + 56);                         \
        (c)->cdw15 = le32((sqe) + 60);                         \
        (c)->timeout_ms = (tmo);                               \
    } while (0)

    int nvmefs_ring_open(struct nvmefs_ring **out, unsigned entries, int eventfd)
    {
        struct nvmefs_ring *r = calloc(1, sizeof(*r));
        int ret;

        if (!r)
            return -ENOMEM;
        /* NVMe passthrough needs 128-byte SQEs and 32-byte CQEs */
        ret = io_uring_queue_init(entries, &r->ring, IORING_SETUP_SQE128 | IORING_SETUP_CQE32);
        if (ret < 0) {
            free(r);
            return ret;
        }
        if (eventfd >= 0) {
            ret = io_uring_register_eventfd(&r->ring, eventfd);
            if (ret < 0) {
                io_uring_queue_exit(&r->ring);
                free(r);
                return ret;
            }
        }
        *out = r;
        return 0;
    }

    void nvmefs_ring_close(struct nvmefs_ring *r)
    {
        io_uring_queue_exit(&r->ring);
        free(r);
    }

    /* Queue as many of `reqs` as the SQ holds and submit them with one io_uring_enter.
       Each command's user_data is its slot, marked -EINPROGRESS until it completes.
       Returns how many were queued, or -errno if the submission itself failed. */
    int nvmefs_ring_submit(struct nvmefs_ring *r, const struct nvmefs_req *reqs,
                           struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n)
    {
        int i, ret;

        for (i = 0; i < n; i++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
            struct nvme_uring_cmd *cmd;

            if (!sqe)
                break;
            memset(sqe, 0, 2 * sizeof(*sqe));
            sqe->opcode = IORING_OP_URING_CMD;
            sqe->fd = reqs[i].fd;
            sqe->cmd_op = reqs[i].cmd_op;
            slots[i].batch = batch;
            slots[i].res = -EINPROGRESS;
            sqe->user_data = (uint64_t)(uintptr_t)&slots[i];
            cmd = (struct nvme_uring_cmd *)sqe->cmd;
            FILL_CMD(cmd, reqs[i].sqe, reqs[i].data, reqs[i].data_len, reqs[i].timeout_ms);
        }
        if (i == 0)
            return 0;
        ret = io_uring_submit(&r->ring);
        return ret < 0 ? ret : i;
    }

    /* Land every available completion in its slot; report the ids of batches that
       became complete (at most `max_done`) and the number of completions reaped. */
    int nvmefs_ring_reap(struct nvmefs_ring *r, uint64_t *done, int max_done, int *reaped)
    {
        struct io_uring_cqe *cqe;
        unsigned head;
        int n = 0, k = 0;

        io_uring_for_each_cqe(&r->ring, head, cqe) {
            struct nvmefs_slot *slot = (struct nvmefs_slot *)(uintptr_t)cqe->user_data;

            if (k == max_done)
                break;
            slot->res = cqe->res;
            slot->result = cqe->big_cqe[0];
            if (--slot->batch->remaining == 0)
                done[k++] = slot->batch->id;
            n++;
        }
        io_uring_cq_advance(&r->ring, n);
        *reaped = n;
        return k;
    }

    /* NVME_IOCTL_ADMIN64_CMD / NVME_IOCTL_IO64_CMD: returns 0, a positive NVMe status,
       or -errno; the CQE's DW0 | DW1 << 32 in *result. */
    int nvmefs_ioctl(int fd, unsigned long request, const unsigned char *sqe, void *data,
                     uint32_t data_len, uint32_t timeout_ms, uint64_t *result)
    {
        struct nvme_passthru_cmd64 cmd;
        int ret;

        memset(&cmd, 0, sizeof(cmd));
        FILL_CMD(&cmd, sqe, data, data_len, timeout_ms);
        ret = ioctl(fd, request, &cmd);
        *result = cmd.result;
        return ret < 0 ? -errno : ret;
    }

    void *nvmefs_alloc(size_t size)
    {
        void *p = NULL;
        /* page aligned, so the kernel can map it for DMA without bouncing */
        return posix_memalign(&p, 4096, size ? size : 1) ? NULL : p;
    }

    void nvmefs_free(void *p)
    {
        free(p);
    }
""", libraries=["uring"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
