"""The `vfio` backend: nvmefs's own PCIe NVMe driver (DESIGN §6).

URIs:
  vfio:0000:00:03.0[?OPTIONS]       a PCI function bound to vfio-pci (`nvmefs vfio bind`)
  vfio:sim[:SIM OPTIONS][?OPTIONS]  the same driver over the register-level model of the
                                    simulated controller (model.py), with no VFIO at all
OPTIONS (`&`-separated): queues=N I/O queue pairs (1..64, default 4), depth=N entries per
I/O queue (2..65536, default 1024; both also bounded by what the controller grants),
dma=SIZE DMA memory for data (default 64M; K, M, G suffixes), poll=1 I/O queues
without interrupts, each batch's completions polled by its submitter, and for the
model vectors=N interrupt vectors (0: the driver polls).
"""
