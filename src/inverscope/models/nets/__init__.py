"""Networks: nn.Modules built from a typed config; they know nothing of training."""

from inverscope.models.nets.bilstm_ae import BiLSTMAutoencoder, BiLSTMAutoencoderConfig
from inverscope.models.nets.cnn3d import StackCNN3D, StackCNN3DConfig
from inverscope.models.nets.conv_ae import SparseConvAE, SparseConvAEConfig
from inverscope.models.nets.pattern_classifiers import (PolarizationCNN, PolarizationCNNConfig, ResNetPatternNet,
                                                        ResNetPatternNetConfig, VGGPatternNet, VGGPatternNetConfig)
from inverscope.models.nets.pattern_cnn import PatternCNN, PatternCNNConfig
from inverscope.models.nets.pca_residual_ae import PCAResidualAE, PCAResidualAEConfig
from inverscope.models.nets.unet import UNet, UNetConfig
from inverscope.models.nets.shallow import LoopCNN1D, LoopCNN1DConfig, ShallowMLP, ShallowMLPConfig

NETS = {"stack_cnn3d": (StackCNN3D, StackCNN3DConfig),
        "bilstm_ae": (BiLSTMAutoencoder, BiLSTMAutoencoderConfig),
        "sparse_conv_ae": (SparseConvAE, SparseConvAEConfig),
        "pca_residual_ae": (PCAResidualAE, PCAResidualAEConfig),
        "shallow_mlp": (ShallowMLP, ShallowMLPConfig),
        "loop_cnn1d": (LoopCNN1D, LoopCNN1DConfig),
        "pattern_cnn": (PatternCNN, PatternCNNConfig),
        "vgg_pattern": (VGGPatternNet, VGGPatternNetConfig),
        "resnet_pattern": (ResNetPatternNet, ResNetPatternNetConfig),
        "polarization_cnn": (PolarizationCNN, PolarizationCNNConfig),
        "unet": (UNet, UNetConfig)}


def build_net(name: str, config: dict):
    """Build the network `name` from its config dict (as saved in model metadata)."""
    from inverscope.core.config import validate
    from inverscope.core.errors import ConfigError

    if name not in NETS:
        raise ConfigError(f"model.architecture: got {name!r}; allowed: {', '.join(NETS)}")
    cls, cfg_cls = NETS[name]
    return cls(validate(cfg_cls, config, "model"))


__all__ = ["UNet", "UNetConfig", "NETS", "StackCNN3D", "StackCNN3DConfig", "BiLSTMAutoencoder", "BiLSTMAutoencoderConfig",
           "SparseConvAE", "SparseConvAEConfig", "PCAResidualAE", "PCAResidualAEConfig",
           "ShallowMLP", "ShallowMLPConfig", "LoopCNN1D", "LoopCNN1DConfig", "PatternCNN", "PatternCNNConfig",
           "VGGPatternNet", "VGGPatternNetConfig", "ResNetPatternNet", "ResNetPatternNetConfig",
           "PolarizationCNN", "PolarizationCNNConfig", "build_net"]
