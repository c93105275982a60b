"""model/blocks.py: RECCE's graph reasoning, batched, against a plain loop over positions."""
import torch
import torch.nn.functional as F

from model.blocks import GraphReasoning


def _loop_reasoning(gr, a_map, b_map, c_map):
    """Per-position reference written plainly: unfold, then one node at a time."""
    n, _, h, w = a_map.shape
    unfold_b = torch.nn.Unfold(2, stride=2)(b_map).view(n, b_map.shape[1], 4, h * w)
    unfold_c = torch.nn.Unfold(4, stride=4)(c_map).view(n, c_map.shape[1], 16, h * w)
    a_emb = gr.va_embedding(a_map).flatten(2)
    gate_b = 1 - gr.va_gated_b(a_map).flatten(2)
    gate_c = 1 - gr.va_gated_c(a_map).flatten(2)
    out = []
    for p in range(h * w):
        a = a_emb[:, :, p]  # N 256
        parts = []
        for unfold, emb, rew, gate in [(unfold_b, gr.vb_embedding, gr.reweight_ab, gate_b),
                                       (unfold_c, gr.vc_embedding, gr.reweight_ac, gate_c)]:
            v = emb(unfold[:, :, :, p].transpose(1, 2))  # N K 256
            k = v.shape[1]
            logit = rew[0](torch.cat([a[:, None].expand(-1, k, -1), v], dim=-1))  # N K 1
            wgt = torch.softmax(F.relu(logit), dim=1)
            parts.append((wgt * v).sum(1) * gate[:, :, p])
        out.append(torch.sigmoid(torch.cat(parts + [a], dim=1)))
    fused = torch.stack(out, dim=-1).view(n, -1, h, w)
    return gr.reproject(fused)


def test_graph_reasoning_batched_equals_loop():
    torch.manual_seed(0)
    gr = GraphReasoning().eval()
    a = torch.randn(2, 728, 3, 5)
    b = torch.randn(2, 256, 6, 10)
    c = torch.randn(2, 128, 12, 20)
    with torch.no_grad():
        batched, looped = gr(a, b, c), _loop_reasoning(gr, a, b, c)
    assert batched.shape == (2, 728, 3, 5)
    assert (batched - looped).abs().max().item() < 1e-6
