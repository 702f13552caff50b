from .decoder import DiTiDecoderModel, DiTiDecoderOutput
from .denoiser import DenoiseOutput, compile_denoiser, denoise
from .encoder import DiTiEncoderModel, DiTiEncoderOutput
from .unet_split import UNetFeatures, unet_down, unet_up

__all__ = [
    "DenoiseOutput",
    "DiTiDecoderModel",
    "DiTiDecoderOutput",
    "DiTiEncoderModel",
    "DiTiEncoderOutput",
    "UNetFeatures",
    "compile_denoiser",
    "denoise",
    "unet_down",
    "unet_up",
]
