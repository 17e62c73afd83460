import torch
import torch.nn.functional as F

from shared.nn import Mlp


def test_mlp_keys_and_forward_are_timms():
    torch.manual_seed(0)
    mlp = Mlp(8, 32)
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "fc1.weight": (32, 8),
        "fc1.bias": (32,),
        "fc2.weight": (8, 32),
        "fc2.bias": (8,),
    }
    x = torch.randn(2, 5, 8)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), expected)
