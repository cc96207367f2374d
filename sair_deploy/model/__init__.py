"""SAIR's torch modules: one file per part of the network (imports torch)."""

from .config import CONFIGS, AppEncoderConfig, MLPConfig, SAIRConfig, SemanticConfig, get_config
from .fast import FastSAIR
from .sair import SAIR, Features

__all__ = ["SAIR", "FastSAIR", "Features", "SAIRConfig", "SemanticConfig", "AppEncoderConfig",
           "MLPConfig", "CONFIGS", "get_config"]
