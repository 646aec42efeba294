"""Worker helpers: which exceptions count as a failed collective of a multi-process run."""

import torch.distributed as dist

from llm_trainer.worker import _is_collective_error


def test_collective_failures_are_recognised_by_type_or_backend_name():
    assert _is_collective_error(dist.DistBackendError("rank 1 went away"))
    assert _is_collective_error(RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert _is_collective_error(RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970"))


def test_ordinary_errors_that_mention_peers_or_sockets_are_not():
    assert not _is_collective_error(ValueError("the peer review column is empty"))
    assert not _is_collective_error(RuntimeError("socket timed out reading the dataset"))
    assert not _is_collective_error(OSError("connection refused by the hub"))
