"""Helpers for CLIP parity tests: open_clip models on fixed seeds and the file formats they ship in."""
import numpy as np
import torch

import open_clip


def reference_model(name, seed=0):
    """An open_clip model with random weights drawn from a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():  # give layer norms and biases non-trivial values so they are tested too
        for key, value in model.state_dict().items():
            if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                value.copy_(1 + 0.1 * torch.randn_like(value))
            elif key.endswith("bias"):
                value.copy_(0.02 * torch.randn_like(value))
    return model.eval()


def hf_state_dict(model):
    """open_clip weights in Hugging Face ``CLIPModel`` layout (q/k/v split, projections transposed)."""
    out = {}
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "attn_mask"}
    for key, value in sd.items():
        tower = "vision_model" if key.startswith("visual.") else "text_model"
        short = key[len("visual."):] if key.startswith("visual.") else key
        if key == "visual.proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif key == "logit_scale":
            out["logit_scale"] = value
        elif short == "conv1.weight":
            out["vision_model.embeddings.patch_embedding.weight"] = value
        elif short == "class_embedding":
            out["vision_model.embeddings.class_embedding"] = value
        elif short == "positional_embedding":
            out[f"{tower}.embeddings.position_embedding.weight"] = value
        elif short == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = value
        elif short.startswith(("ln_pre", "ln_post", "ln_final")):
            name = {"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm", "ln_final": "final_layer_norm"}
            head, tail = short.split(".", 1)
            out[f"{tower}.{name[head]}.{tail}"] = value
        else:
            layer = short.replace("transformer.resblocks.", "encoder.layers.")
            layer = layer.replace(".ln_1.", ".layer_norm1.").replace(".ln_2.", ".layer_norm2.")
            layer = layer.replace(".mlp.c_fc.", ".mlp.fc1.").replace(".mlp.c_proj.", ".mlp.fc2.")
            layer = layer.replace(".attn.out_proj.", ".self_attn.out_proj.")
            if ".attn.in_proj_" in layer:
                kind = layer.rsplit("_", 1)[1]
                base = layer.split(".attn.")[0]
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{tower}.{base}.self_attn.{part}_proj.{kind}"] = chunk.contiguous()
            else:
                out[f"{tower}.{layer}"] = value
    return out


def encode(model, pixels, ids):
    with torch.no_grad():
        return (model.encode_image(torch.from_numpy(pixels)).numpy(),
                model.encode_text(torch.from_numpy(ids).long()).numpy())


def random_pixels(batch, size, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
