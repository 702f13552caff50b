from .loss import LOSS_MODES, DiTiLossOutput, condition_for_timesteps, diti_loss

__all__ = ["LOSS_MODES", "DiTiLossOutput", "condition_for_timesteps", "diti_loss"]
