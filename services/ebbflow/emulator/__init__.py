"""The emulated GPU: one service-time model shared by the Triton model, the simulator and the scheduler, and the pool of replicas it drives (pool.py)."""
