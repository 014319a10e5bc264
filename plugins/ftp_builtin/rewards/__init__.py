"""The built-in rewards: text checks (`ftp_builtin.rewards.text`) and a reward model."""

from __future__ import annotations

from ftp import Reward, hookimpl
from ftp_builtin.rewards.model import RewardModel
from ftp_builtin.rewards.text import ExactMatch, JsonValid, Length, NumericAnswer, RegexReward


@hookimpl
def ftp_rewards() -> list[type[Reward]]:
    """Register the built-in rewards."""
    return [RegexReward, ExactMatch, NumericAnswer, Length, JsonValid, RewardModel]
