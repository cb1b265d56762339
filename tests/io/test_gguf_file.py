"""Our GGUF container reader against the `gguf` package's GGUFReader (the reference)."""

import gguf
import numpy as np
import pytest

from dspark_jax.io.gguf_file import GGUFFormatError, read_gguf
from dspark_jax.io.model_files import smollm2_135m_gguf


@pytest.mark.real_model
def test_tensor_directory_and_bytes_match_gguf_reader():
  path = smollm2_135m_gguf()
  ours = read_gguf(path)
  ref = gguf.GGUFReader(path)
  assert len(ours.tensors) == len(ref.tensors) == 272
  for tensor in ref.tensors:
    info = ours.tensors[tensor.name]
    assert info.type_id == int(tensor.tensor_type)
    assert info.shape == tuple(int(d) for d in reversed(tensor.shape.tolist()))
    raw = ours.raw(tensor.name)
    np.testing.assert_array_equal(raw.ravel(), np.asarray(tensor.data).view(np.uint8).ravel())


def test_truncated_data_is_detected(tmp_path):
  path = tmp_path / "t.gguf"
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_tensor("x", np.arange(64, dtype=np.float32).reshape(8, 8))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  np.testing.assert_array_equal(read_gguf(path).raw("x").view(np.float32).ravel(), np.arange(64))
  path.write_bytes(path.read_bytes()[:-16])
  with pytest.raises(GGUFFormatError, match="past the end"):
    read_gguf(path).raw("x")
