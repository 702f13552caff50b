from .decoder import DiTiDecoderModel, DiTiDecoderOutput
from .denoiser import DenoiseOutput, compile_denoiser, denoise
from .encoder import DiTiEncoderModel, DiTiEncoderOutput
from .frozen_ddpm import eps_function, load_frozen_ddpm
from .transformers_encoder import DiTiEncoderTransformersModel  # registers with transformers' Auto classes
from .unet_split import UNetFeatures, unet_down, unet_up

__all__ = [
    "DenoiseOutput",
    "DiTiDecoderModel",
    "DiTiDecoderOutput",
    "DiTiEncoderModel",
    "DiTiEncoderOutput",
    "DiTiEncoderTransformersModel",
    "UNetFeatures",
    "compile_denoiser",
    "denoise",
    "eps_function",
    "load_frozen_ddpm",
    "unet_down",
    "unet_up",
]
