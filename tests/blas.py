"""What the BLAS libraries loaded in this process run on, as threadpoolctl sees them."""

from __future__ import annotations

from threadpoolctl import threadpool_info


def blas_thread_counts() -> set[int]:
    """Each loaded BLAS's thread count: {1} when all of them compute on one thread."""
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
