import torch

from portraitrig.accel.constants import device_constant


def test_a_device_constant_is_made_once_per_values_dtype_and_device():
    a = device_constant((0.2, 0.7, 0.1), torch.float32, "cpu")
    assert a is device_constant((0.2, 0.7, 0.1), torch.float32, torch.device("cpu"))
    torch.testing.assert_close(a, torch.tensor([0.2, 0.7, 0.1]))
    b = device_constant((0.2, 0.7, 0.1), torch.float64, "cpu")
    assert b is not a and b.dtype == torch.float64 and b[1].item() == 0.7
    grid = device_constant(((0.0, 1.0), (1.0, 0.0)), torch.float32, "cpu")
    assert grid.shape == (2, 2) and grid[0, 1] == 1
