"""Networks: nn.Modules built from a typed config; they know nothing of training."""

from inverscope.models.nets.bilstm_ae import BiLSTMAutoencoder, BiLSTMAutoencoderConfig
from inverscope.models.nets.cnn3d import StackCNN3D, StackCNN3DConfig
from inverscope.models.nets.conv_ae import SparseConvAE, SparseConvAEConfig

NETS = {"stack_cnn3d": (StackCNN3D, StackCNN3DConfig),
        "bilstm_ae": (BiLSTMAutoencoder, BiLSTMAutoencoderConfig),
        "sparse_conv_ae": (SparseConvAE, SparseConvAEConfig)}


def build_net(name: str, config: dict):
    """Build the network `name` from its config dict (as saved in model metadata)."""
    from inverscope.core.config import validate
    from inverscope.core.errors import ConfigError

    if name not in NETS:
        raise ConfigError(f"model.architecture: got {name!r}; allowed: {', '.join(NETS)}")
    cls, cfg_cls = NETS[name]
    return cls(validate(cfg_cls, config, "model"))


__all__ = ["NETS", "StackCNN3D", "StackCNN3DConfig", "BiLSTMAutoencoder", "BiLSTMAutoencoderConfig",
           "SparseConvAE", "SparseConvAEConfig", "build_net"]
