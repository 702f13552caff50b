"""Writes model_cards/diti-hf--diti-celeba64.md: the card of the paper-setting CelebA-64 model, which is TO BE TRAINED.

The facts in the card (architecture, partition, parameter counts) are read from a pipeline built with that
architecture; it holds random weights and is never saved. No metric is given: none has been measured.
Run: python model_cards/make_celeba64_card.py
"""

from pathlib import Path

from diffusers import DDIMScheduler, UNet2DModel

from diti_hf import DiTiDecoderModel, DiTiEncoderModel, DiTiImageProcessor, DiTiPipeline
from diti_hf.conversion import OFFICIAL_CELEBA64_DDPM, unet_config_from_official
from diti_hf.hub import create_model_card

TRAINING_COMMAND = """diti-hf convert --dpm-config celeba64_dpm.yml --dpm-checkpoint celeba64_dpm.pt --output-dir official-celeba64
accelerate launch --multi_gpu --num_processes 4 examples/train_diti.py \\
  --pretrained_unet official-celeba64 \\
  --train_data_dir /data/celeba/img_align_celeba --preprocessing celeba64 \\
  --encoder_preset celeba64 --latent_dim 512 --num_chunks 64 \\
  --stages 50 100 300 500 1000 --dims_per_stage 10 25 327 100 50 --mode stop_grad \\
  --train_batch_size 32 --learning_rate 1e-4 --ema_decay 0.9999 --no-ema_warmup --max_train_images 38000000 \\
  --checkpointing_steps 5000 --checkpoints_total_limit 3 --validation_steps 5000 \\
  --dataloader_num_workers 4 --output_dir diti-celeba64 --resume_from_checkpoint latest"""
EVAL_COMMAND = "python examples/evaluate.py --protocol celeba --model diti=diti-celeba64 --dataset <celeba dataset> --output_dir report-celeba64"
STATUS = (
    "**To be trained.** No weights have been trained or uploaded under this name yet, and no number on this card "
    "has been measured. The command above reproduces the paper's CelebA-64 setting (global batch 128, Adam 1e-4, "
    "EMA 0.9999, 38M images) on the official pre-trained DDPM converted with `diti-hf convert`."
)


def main() -> Path:
    unet = UNet2DModel(**unet_config_from_official(OFFICIAL_CELEBA64_DDPM, image_size=64))
    encoder = DiTiEncoderModel.from_preset(
        "celeba64",
        latent_dim=512,
        num_chunks=64,
        stages=[50, 100, 300, 500, 1000],
        dims_per_stage=[10, 25, 327, 100, 50],
    )
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=512)
    scheduler = DDIMScheduler(clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading")
    pipe = DiTiPipeline(unet, encoder, decoder, scheduler, image_processor=DiTiImageProcessor.from_preset("celeba64"))
    card = create_model_card(
        pipe,
        repo_id="diti-hf/diti-celeba64",
        training_command=TRAINING_COMMAND,
        eval_command=EVAL_COMMAND,
        extra_sections={"Status": STATUS},
    )
    text = str(card)
    title_end = text.index("\n", text.index("\n# ") + 1)  # flag the status right under the title too
    text = (
        text[: title_end + 1]
        + "\n> **To be trained** — no weights or measured numbers yet; see Status.\n"
        + text[title_end + 1 :]
    )
    path = Path(__file__).parent / "diti-hf--diti-celeba64.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    print(main())
