"""The n-gram drafter's lookup on hand-made histories."""

import jax.numpy as jnp
import numpy as np

from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters.ngram import NgramDrafter


def propose(drafter, history, anchor):
  state = drafter.init_state(None, None, jnp.asarray([history]), jnp.asarray([len(history)]), 32)
  proposal, _ = drafter.propose(
    None,
    state,
    jnp.asarray([anchor]),
    jnp.asarray([len(history)]),
    SamplingParams(),
    0,
    jnp.zeros(1, jnp.int32),
  )
  valid = int(proposal.num_valid[0])
  return proposal, np.asarray(proposal.tokens[0, :valid]).tolist()


def test_longest_match_and_its_continuation():
  drafter = NgramDrafter(4, 10, max_ngram=3, min_ngram=1)
  # "1 2 3" occurs at 0..2; the 1-gram "3" also occurs later at 6 (followed by 9).
  proposal, tokens = propose(drafter, [1, 2, 3, 4, 5, 7, 3, 9, 1, 2], 3)
  assert tokens == [4, 5, 7, 3]
  one_hot = np.asarray(proposal.logits[0])
  assert (one_hot[np.arange(4), [4, 5, 7, 3]] == 0).all()
  assert np.isneginf(one_hot).sum() == 4 * 9


def test_continuation_is_cut_at_the_anchor():
  drafter = NgramDrafter(4, 10, max_ngram=2, min_ngram=2)
  # The only earlier "5 6" ends two tokens before the anchor: 7 and the anchor 5 are known.
  _, tokens = propose(drafter, [5, 6, 7], 5)
  assert tokens == []  # the query "7 5" never occurred
  _, tokens = propose(drafter, [5, 6, 7, 5], 6)
  assert tokens == [7, 5, 6]


def test_no_match_proposes_nothing():
  drafter = NgramDrafter(3, 10, max_ngram=3, min_ngram=2)
  _, tokens = propose(drafter, [1, 2, 3, 4], 5)
  assert tokens == []
