"""cffi API-mode build of nvmefs._nvme: Linux NVMe passthrough by ioctl and io_uring, and
the vfio driver's queues.

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
        void *metadata;             /* separate metadata buffer (MPTR), or NULL */
        uint32_t metadata_len;
    };

    struct nvmefs_batch {
        uint64_t id;                /* the submitter's handle, reported when all are done */
        uint32_t remaining;         /* commands not yet completed */
        uint32_t failed;            /* vfio: completions with a non-zero status or -errno */
    };

    struct nvmefs_slot {            /* where one command's completion lands */
        struct nvmefs_batch *batch;
        uint64_t result;            /* CQE DW0 | DW1 << 32 */
        int32_t res;                /* 0, a positive NVMe status, or -errno */
        uint16_t qid, cid;          /* vfio: where the command went */
    };

    struct nvmefs_ring;

    int nvmefs_ring_open(struct nvmefs_ring **ring, unsigned entries, int eventfd);
    void nvmefs_ring_close(struct nvmefs_ring *ring);
    int nvmefs_ring_submit(struct nvmefs_ring *ring, const struct nvmefs_req *reqs,
                           struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n);
    int nvmefs_ring_reap(struct nvmefs_ring *ring, uint64_t *done, int max_done, int *reaped);

    int nvmefs_ioctl(int fd, unsigned long request, const unsigned char *sqe, void *data,
                     uint32_t data_len, uint32_t timeout_ms, uint64_t *result);

    struct nvmefs_queue {           /* one NVMe queue pair the vfio driver owns */
        uint8_t *sq;                /* submission queue: sq_size entries of 64 bytes */
        uint8_t *cq;                /* completion queue: cq_size entries of 16 bytes */
        uint32_t *sqtdbl;           /* SQ tail doorbell in BAR0 */
        uint32_t *cqhdbl;           /* CQ head doorbell in BAR0 */
        uint16_t qid, sq_size, cq_size;
        uint16_t sq_tail, sq_head, cq_head;
        uint8_t phase;              /* the phase tag of new completions: 1 on the first pass */
        uint32_t page_size;         /* CC.MPS in bytes */
        uint16_t free_top;          /* free command ids on the stack */
        uint16_t *free_cids;        /* sq_size - 1 of them */
        struct nvmefs_slot **slots; /* by command id: where its completion lands */
        uint64_t stray;             /* completions for no command of ours */
    };

    struct nvmefs_data {            /* a batch's DMA memory */
        uint64_t iova;              /* data pieces, at `offsets` */
        uint8_t *list_host;         /* PRP list pages, taken in order */
        uint64_t list_iova;
        uint32_t list_used;         /* pages taken so far */
        uint32_t list_pages;        /* pages there are */
    };

    int nvmefs_sq_submit(struct nvmefs_queue *q, const unsigned char *sqes, const uint32_t *offsets,
                         const uint32_t *lens, struct nvmefs_data *data,
                         struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n);
    int nvmefs_cq_reap(struct nvmefs_queue *q, uint64_t *done, int max_done, int *reaped);
    int nvmefs_queue_cancel(struct nvmefs_queue *q, int32_t res, uint64_t *done, int max_done);
    uint32_t nvmefs_prp_list_pages(uint64_t iova, uint32_t len, uint32_t page_size);
    uint32_t nvmefs_mmio_read32(void *bar, size_t offset);
    void nvmefs_mmio_write32(void *bar, size_t offset, uint32_t value);

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
        void *metadata;
        uint32_t metadata_len;
    };

    struct nvmefs_batch {
        uint64_t id;
        uint32_t remaining;
        uint32_t failed;
    };

    struct nvmefs_slot {
        struct nvmefs_batch *batch;
        uint64_t result;
        int32_t res;
        uint16_t qid, cid;
    };

    /* The ring, and which command each SQE slot holds. A slot is handed out again only
       once its command has completed, not once the kernel has consumed it: a kernel
       that punts a uring_cmd to a worker (-EAGAIN, e.g. while the controller resets)
       may read the command from the SQE then (seen as EFAULT on Debian's 6.1), so the
       SQ array maps ring positions to SQEs taken from a free list. */
    struct nvmefs_ring {
        struct io_uring ring;
        struct nvmefs_slot **inflight;  /* by SQE index: where its completion lands */
        unsigned *free;                 /* SQE indexes not in flight */
        unsigned nfree;
    };

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

    void nvmefs_ring_close(struct nvmefs_ring *r)
    {
        io_uring_queue_exit(&r->ring);
        free(r->inflight);
        free(r->free);
        free(r);
    }

    int nvmefs_ring_open(struct nvmefs_ring **out, unsigned entries, int eventfd)
    {
        struct nvmefs_ring *r = calloc(1, sizeof(*r));
        int ret;

        unsigned i;

        if (!r)
            return -ENOMEM;
        /* NVMe passthrough needs 128-byte SQEs and 32-byte CQEs */
        ret = io_uring_queue_init(entries, &r->ring, IORING_SETUP_SQE128 | IORING_SETUP_CQE32);
        if (ret < 0) {
            free(r);
            return ret;
        }
        entries = r->ring.sq.ring_entries;
        r->inflight = calloc(entries, sizeof(*r->inflight));
        r->free = calloc(entries, sizeof(*r->free));
        if (!r->inflight || !r->free) {
            nvmefs_ring_close(r);
            return -ENOMEM;
        }
        for (i = 0; i < entries; i++)
            r->free[i] = entries - 1 - i;
        r->nfree = entries;
        if (eventfd >= 0) {
            ret = io_uring_register_eventfd(&r->ring, eventfd);
            if (ret < 0) {
                nvmefs_ring_close(r);
                return ret;
            }
        }
        *out = r;
        return 0;
    }

    /* Queue as many of `reqs` as there are free SQEs and submit them with one
       io_uring_enter. Each command's slot is marked -EINPROGRESS until it completes.
       Returns how many were queued, or -errno if the submission itself failed. */
    int nvmefs_ring_submit(struct nvmefs_ring *r, const struct nvmefs_req *reqs,
                           struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n)
    {
        struct io_uring_sq *sq = &r->ring.sq;
        int i, ret;

        for (i = 0; i < n && r->nfree; i++) {
            unsigned index = r->free[--r->nfree];
            struct io_uring_sqe *sqe = &sq->sqes[index << 1];      /* SQE128: two apiece */
            struct nvme_uring_cmd *cmd;

            memset(sqe, 0, 2 * sizeof(*sqe));
            sqe->opcode = IORING_OP_URING_CMD;
            sqe->fd = reqs[i].fd;
            sqe->cmd_op = reqs[i].cmd_op;
            slots[i].batch = batch;
            slots[i].res = -EINPROGRESS;
            r->inflight[index] = &slots[i];
            sqe->user_data = index;
            cmd = (struct nvme_uring_cmd *)sqe->cmd;
            FILL_CMD(cmd, reqs[i].sqe, reqs[i].data, reqs[i].data_len, reqs[i].timeout_ms);
            cmd->metadata = (uint64_t)(uintptr_t)reqs[i].metadata;
            cmd->metadata_len = reqs[i].metadata_len;
            sq->array[sq->sqe_tail & sq->ring_mask] = index;
            sq->sqe_tail++;
        }
        if (i == 0)
            return 0;
        ret = io_uring_submit(&r->ring);
        return ret < 0 ? ret : i;
    }

    /* Land every available completion in its slot and free its SQE; report the ids of
       batches that became complete (at most `max_done`) and the number reaped. */
    int nvmefs_ring_reap(struct nvmefs_ring *r, uint64_t *done, int max_done, int *reaped)
    {
        struct io_uring_cqe *cqe;
        unsigned head;
        int n = 0, k = 0;

        io_uring_for_each_cqe(&r->ring, head, cqe) {
            struct nvmefs_slot *slot;

            if (k == max_done)
                break;
            slot = r->inflight[cqe->user_data];
            r->free[r->nfree++] = (unsigned)cqe->user_data;
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

    /* ---------------------------------------------------------------- vfio hot path
       The queue memory and BAR0 are the driver's own; these run on its one thread.
       Entries are little-endian (Base 2.0 §4.1); x86 and arm64 hosts are too. */

    struct nvmefs_queue {
        uint8_t *sq;
        uint8_t *cq;
        uint32_t *sqtdbl;
        uint32_t *cqhdbl;
        uint16_t qid, sq_size, cq_size;
        uint16_t sq_tail, sq_head, cq_head;
        uint8_t phase;
        uint32_t page_size;
        uint16_t free_top;
        uint16_t *free_cids;
        struct nvmefs_slot **slots;
        uint64_t stray;
    };

    struct nvmefs_data {
        uint64_t iova;
        uint8_t *list_host;
        uint64_t list_iova;
        uint32_t list_used;
        uint32_t list_pages;
    };

    uint32_t nvmefs_mmio_read32(void *bar, size_t offset)
    {
        return *(volatile uint32_t *)((uint8_t *)bar + offset);
    }

    void nvmefs_mmio_write32(void *bar, size_t offset, uint32_t value)
    {
        *(volatile uint32_t *)((uint8_t *)bar + offset) = value;
    }

    /* Pages after the first that a transfer touches: each needs a PRP entry. */
    static uint32_t prp_entries(uint64_t iova, uint32_t len, uint32_t psz)
    {
        uint64_t first = psz - (iova & (psz - 1));
        return len <= first ? 0 : (uint32_t)((len - first + psz - 1) / psz);
    }

    /* PRP list pages a transfer needs (Base 2.0 §4.1.1): none for one or two pages;
       else a chain where every page but the last gives its last entry to the link. */
    uint32_t nvmefs_prp_list_pages(uint64_t iova, uint32_t len, uint32_t psz)
    {
        uint32_t e = prp_entries(iova, len, psz), per = psz / 8;
        if (e <= 1)
            return 0;
        return e <= per ? 1 : 1 + (e - per + per - 2) / (per - 1);
    }

    /* DPTR of one command: PRP1 = the data (any dword offset), PRP2 = the second page
       or the list. Returns the list pages used, or -1 if `d` has too few left. */
    static int prp_fill(uint8_t *sqe, uint64_t iova, uint32_t len, uint32_t psz,
                        struct nvmefs_data *d)
    {
        uint32_t e = prp_entries(iova, len, psz), pages = nvmefs_prp_list_pages(iova, len, psz);
        uint64_t page = (iova & ~(uint64_t)(psz - 1)) + psz, prp2 = e ? page : 0;
        uint32_t per = psz / 8, i, k = 0;
        uint64_t *list;
        uint64_t list_iova;

        if (pages) {
            if (d->list_used + pages > d->list_pages)
                return -1;
            list = (uint64_t *)(d->list_host + (size_t)d->list_used * psz);
            list_iova = d->list_iova + (uint64_t)d->list_used * psz;
            prp2 = list_iova;
            for (i = 0; i < e; i++, k++) {
                if (k == per - 1 && e - i > 1) {        /* chain to the next list page */
                    list[k] = list_iova + psz;
                    list += per;
                    list_iova += psz;
                    k = 0;
                }
                list[k] = page + (uint64_t)i * psz;
            }
            d->list_used += pages;
        }
        memcpy(sqe + 24, &iova, 8);
        memcpy(sqe + 32, &prp2, 8);
        return (int)pages;
    }

    /* Copy up to n entries into the SQ (each with a free command id and its PRPs),
       then ring the tail doorbell once. A command whose completion lands in slots[i]
       has its data at IOVA d->iova + offsets[i] (lens[i] bytes; 0: none, and its DPTR is
       left as given, e.g. a queue's memory for Create I/O CQ). Returns how many
       went in: fewer when the queue is full, -1 if the PRP list pages ran out. */
    int nvmefs_sq_submit(struct nvmefs_queue *q, const unsigned char *sqes, const uint32_t *offsets,
                         const uint32_t *lens, struct nvmefs_data *d,
                         struct nvmefs_slot *slots, struct nvmefs_batch *batch, int n)
    {
        int i, ret = 0;

        for (i = 0; i < n && q->free_top; i++) {
            uint8_t *e = q->sq + (size_t)q->sq_tail * 64;
            uint16_t cid = q->free_cids[q->free_top - 1];

            memcpy(e, sqes + (size_t)i * 64, 64);
            memcpy(e + 2, &cid, 2);
            if (lens[i] && prp_fill(e, d->iova + offsets[i], lens[i], q->page_size, d) < 0) {
                ret = -1;
                break;
            }
            q->free_top--;
            slots[i].batch = batch;
            slots[i].res = -EINPROGRESS;
            slots[i].qid = q->qid;
            slots[i].cid = cid;
            q->slots[cid] = &slots[i];
            q->sq_tail = q->sq_tail + 1 == q->sq_size ? 0 : q->sq_tail + 1;
        }
        if (i) {
            __atomic_thread_fence(__ATOMIC_RELEASE);    /* entries before the doorbell */
            *(volatile uint32_t *)q->sqtdbl = q->sq_tail;
        }
        return ret < 0 && !i ? -1 : i;
    }

    static int land(struct nvmefs_queue *q, uint16_t cid, int32_t res, uint64_t result,
                    uint64_t *done, int k)
    {
        struct nvmefs_slot *slot = q->slots[cid];

        q->slots[cid] = NULL;
        q->free_cids[q->free_top++] = cid;
        slot->res = res;
        slot->result = result;
        slot->batch->failed += res != 0;
        if (--slot->batch->remaining == 0)
            done[k++] = slot->batch->id;
        return k;
    }

    /* Land every new completion (phase tag = q->phase) in its slot, then write the CQ
       head doorbell once. Reports the ids of batches that became complete (at most
       max_done; stops before a completion that would make one more) and how many
       completions were consumed. */
    int nvmefs_cq_reap(struct nvmefs_queue *q, uint64_t *done, int max_done, int *reaped)
    {
        int n = 0, k = 0;

        while (k < max_done) {
            volatile uint8_t *e = q->cq + (size_t)q->cq_head * 16;
            uint16_t sf = e[14] | e[15] << 8, cid, sqhd;
            uint32_t dw0, dw1;

            if ((sf & 1) != q->phase)
                break;
            __atomic_thread_fence(__ATOMIC_ACQUIRE);    /* the entry after its phase tag */
            memcpy(&dw0, (const uint8_t *)e, 4);
            memcpy(&dw1, (const uint8_t *)e + 4, 4);
            sqhd = e[8] | e[9] << 8;
            cid = e[12] | e[13] << 8;
            if (cid < q->sq_size && q->slots[cid])
                k = land(q, cid, sf >> 1, dw0 | (uint64_t)dw1 << 32, done, k);
            else
                q->stray++;
            q->sq_head = sqhd;
            if (++q->cq_head == q->cq_size) {
                q->cq_head = 0;
                q->phase ^= 1;
            }
            n++;
        }
        if (n)
            *(volatile uint32_t *)q->cqhdbl = q->cq_head;
        *reaped = n;
        return k;
    }

    /* End every command still out on q with `res` (the queue is gone: reset). */
    int nvmefs_queue_cancel(struct nvmefs_queue *q, int32_t res, uint64_t *done, int max_done)
    {
        int k = 0;
        uint16_t cid;

        for (cid = 0; cid < q->sq_size && k < max_done; cid++)
            if (q->slots[cid])
                k = land(q, cid, res, 0, done, k);
        return k;
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
