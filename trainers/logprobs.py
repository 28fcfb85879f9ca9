"""The policy's log-probabilities of given completions, the pass every trainer's loss is built on (GRPO's ratios
and KL, behaviour cloning's likelihood). Two ways with the same numbers and gradients: `sequence_logprobs` runs
each prompt + completion as one sequence; `grouped_logprobs` runs a prompt shared by several completions once.
Both run the LM head (a vocabulary-wide projection, most of a small model's cost per position) only where a
completion token is predicted."""

from __future__ import annotations

from typing import Any

import torch


def padded(seqs: list[list[int]], pad_id: int, device: Any, left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of the sequences padded to the longest with `pad_id`, on the left (so they end
    together) or on the right."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long, device=device)
        mask[i, span] = 1
    return ids, mask


def token_logprobs(
    logits: torch.Tensor, tokens: list[int], temperature: float, entropies: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """log_softmax(logits / T) at each position, taken at that position's token: [len(tokens)]. With a list for
    `entropies`, also appends the distribution's entropy at each position (detached, [len(tokens)])."""
    index = torch.tensor(tokens, device=logits.device)[:, None]
    logp = (logits.float() / temperature).log_softmax(-1)
    if entropies is not None:
        with torch.no_grad():
            entropies.append(-(logp.exp() * logp).sum(-1))
    return logp.gather(-1, index).squeeze(-1)


def sequence_logprobs(
    model: Any,
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> Any:
    """Per-token log-probabilities of each completion given its prompt, under the distribution sampled from at
    `temperature` (log_softmax(logits / T)): a list of [len(completion)] tensors; with_entropy: (that list, the
    policy's entropy at each of those positions).

    The plain way: every (prompt + completion) is one sequence, left-padded so that the completions end
    together; the LM head (a vocabulary-wide projection) runs only on the last positions, the ones that predict
    a completion token, not on the prompts. `grouped_logprobs` gives the same numbers running each shared
    prompt once."""
    device = next(model.parameters()).device
    ids, mask = padded([p + c for p, c in zip(prompts, completions)], pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(map(len, completions)) + 1  # position t predicts token t+1: the last position predicts nothing
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    entropies: list[torch.Tensor] | None = [] if with_entropy else None
    out = [
        token_logprobs(logits[i, keep - 1 - len(c) : keep - 1], c, temperature, entropies)
        for i, c in enumerate(completions)
    ]
    return (out, entropies) if with_entropy else out


def grouped_logprobs(
    model: Any,
    prompts: list[list[int]],
    groups: list[list[list[int]]],
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> Any:
    """Per-token log-probabilities (at `temperature`) of each prompt's completions (any number, at least one),
    running each prompt through the model once.

    GRPO samples G completions of one dialogue state, and the state (hundreds of tokens) is much longer
    than a completion (tens). The prompts go through the model once, left-padded, filling a KV cache; each
    prompt's cache rows are repeated once per completion of it and the completions run on top. Gradients flow
    through the shared cache into the prompt's pass, so the result, values and gradients, equals
    `sequence_logprobs` on the concatenated sequences while a prompt's tokens cost 1/G of the work. Returns
    one tensor per completion, in group order (with_entropy: and the entropies, as `sequence_logprobs`)."""
    device = next(model.parameters()).device
    if not groups or any(not group for group in groups):
        raise ValueError("every prompt needs at least one completion")
    ids, mask = padded(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    head = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    # Row k of the completions' batch continues prompt owner[k].
    owner = torch.tensor([i for i, group in enumerate(groups) for _ in group], dtype=torch.long, device=device)
    cache = head.past_key_values
    cache.batch_select_indices(owner)

    completions = [c for group in groups for c in group]
    cids, cmask = padded(completions, pad_id, device, left=False)
    cpositions = positions[owner, -1:] + 1 + torch.arange(cids.shape[1], device=device)
    tail = model(
        input_ids=cids,
        attention_mask=torch.cat([mask[owner], cmask], 1),
        position_ids=cpositions,
        past_key_values=cache,
        use_cache=True,
    )
    # Token 0 of a completion is predicted by the prompt's last position, token t by completion position t-1.
    logits = torch.cat([head.logits[owner, -1:], tail.logits[:, :-1]], 1)
    entropies: list[torch.Tensor] | None = [] if with_entropy else None
    out = [token_logprobs(logits[i, : len(c)], c, temperature, entropies) for i, c in enumerate(completions)]
    return (out, entropies) if with_entropy else out
