"""Dynamic ops: layers whose active kernel size and channel counts change per forward.

Each op holds the weights of its largest form and computes the active form by slicing
(width) or by kernel transformation (kernel size), following the OFA paper (Cai et al.,
ICLR 2020). ``export_*`` methods return the active weights, so a subnet can be extracted
into plain ``torch.nn`` layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ofa_edge.space.presets import make_divisible


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "hswish": nn.Hardswish}[name]()


class _DepthwiseConv2d(torch.autograd.Function):
    """Depthwise conv whose weight gradient is summed tap by tap.

    PyTorch's CPU backward of a depthwise conv is slow when the kernel is larger than the
    feature map (7x7 kernels on 4x4 or 2x2 maps, common in small-image spaces): 4-8x slower
    than summing ``input_window * grad_out`` for each of the k*k taps, which is what this does.
    The input gradient is PyTorch's own. Same result to float precision (a test checks it).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        c, k, p, s = x.shape[1], weight.shape[-1], ctx.padding, ctx.stride
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, s, p, 1, c)
        if ctx.needs_input_grad[1]:
            ho, wo = grad_out.shape[2], grad_out.shape[3]
            padded = F.pad(x, (p, p, p, p))
            grad_w = torch.empty(c, k, k, dtype=x.dtype)
            for i in range(k):
                for j in range(k):
                    window = padded[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
                    grad_w[:, i, j] = (window * grad_out).sum((0, 2, 3))
            grad_w = grad_w.unsqueeze(1)
        return grad_x, grad_w, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """``F.conv2d`` with groups = channels; takes the tap-sum backward when training on CPU
    with a kernel larger than the feature map, where it is faster than PyTorch's."""
    if (torch.is_grad_enabled() and x.device.type == "cpu" and weight.requires_grad
            and x.shape[-1] < weight.shape[-1]):
        return _DepthwiseConv2d.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])


class DynamicConv2d(nn.Module):
    """A dense conv whose input and output channels are sliced from the largest weight."""

    def __init__(self, max_in: int, max_out: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        return self.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        w = self.active_weight(x.shape[1], out_channels)
        return F.conv2d(x, w, None, self.stride, self.padding)


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv with an elastic kernel and elastic channels.

    The largest kernel's weight is shared. A smaller kernel takes the centre of the next
    larger active kernel and maps it through a learned ``(k*k, k*k)`` matrix, initialised to
    the identity, one per transition (7->5, 5->3): ``small = centre @ M.T``.
    """

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int = 1):
        super().__init__()
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernel_choices[:0:-1], self.kernel_choices[-2::-1])
        })

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.weight[:channels]
        size = self.max_kernel
        for big, small in zip(self.kernel_choices[:0:-1], self.kernel_choices[-2::-1]):
            if size <= kernel:
                break
            start = (big - small) // 2
            centre = w[:, :, start:start + small, start:start + small].reshape(channels, small * small)
            w = (centre @ self.transforms[f"{big}to{small}"].t()).reshape(channels, 1, small, small)
            size = small
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        channels = x.shape[1]
        return depthwise_conv2d(x, self.active_weight(channels, kernel), self.stride, kernel // 2)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of the largest layer (``C`` = input channels).

    Running statistics are shared by all subnets; recalibrate them per subnet before
    evaluating it (``ofa_edge.space.bn.recalibrate_bn``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch_stats, factor, self.eps)


class DynamicSE(nn.Module):
    """Squeeze-and-excite whose hidden width follows the active channels: make_divisible(C // r, 8)."""

    def __init__(self, max_channels: int, reduction: int = 4):
        super().__init__()
        self.reduction = reduction
        max_mid = make_divisible(max_channels // reduction, 8)
        self.reduce = nn.Conv2d(max_channels, max_mid, 1, bias=True)
        self.expand = nn.Conv2d(max_mid, max_channels, 1, bias=True)

    def mid_channels(self, channels: int) -> int:
        return make_divisible(channels // self.reduction, 8)

    def active_weights(self, channels: int) -> tuple[torch.Tensor, ...]:
        mid = self.mid_channels(channels)
        return (self.reduce.weight[:mid, :channels], self.reduce.bias[:mid],
                self.expand.weight[:channels, :mid], self.expand.bias[:channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rw, rb, ew, eb = self.active_weights(x.shape[1])
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, rw, rb))
        y = F.hardsigmoid(F.conv2d(y, ew, eb))
        return x * y


class DynamicMBConv(nn.Module):
    """An inverted-bottleneck block with elastic kernel and expand ratio (fixed in/out width)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str, use_se: bool,
                 kernel_choices: tuple[int, ...], expand_choices: tuple[int, ...], se_reduction: int = 4):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.act_name, self.use_se = act, use_se
        self.kernel_choices, self.expand_choices = tuple(kernel_choices), tuple(expand_choices)
        max_mid = self.mid_channels(max(expand_choices))
        self.expand_conv = DynamicConv2d(in_channels, max_mid)
        self.expand_bn = DynamicBatchNorm2d(max_mid)
        self.depthwise = DynamicDepthwiseConv2d(max_mid, kernel_choices, stride)
        self.depthwise_bn = DynamicBatchNorm2d(max_mid)
        self.se = DynamicSE(max_mid, se_reduction) if use_se else None
        self.project_conv = DynamicConv2d(max_mid, out_channels)
        self.project_bn = DynamicBatchNorm2d(out_channels)
        self.act = activation(act)
        self.residual = stride == 1 and in_channels == out_channels
        self.active_kernel, self.active_expand = max(kernel_choices), max(expand_choices)

    def mid_channels(self, expand: int) -> int:
        return make_divisible(round(self.in_channels * expand), 8)

    def set_active(self, kernel: int, expand: int) -> None:
        self.active_kernel, self.active_expand = kernel, expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.mid_channels(self.active_expand)
        y = self.act(self.expand_bn(self.expand_conv(x, mid)))
        y = self.act(self.depthwise_bn(self.depthwise(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.out_channels))
        return x + y if self.residual else y

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the middle channels by importance (L1 norm of the project weights), so that
        the first channels, which every expand ratio keeps, are the most important ones."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        self.depthwise.weight.copy_(self.depthwise.weight[order])
        for bn in (self.expand_bn, self.depthwise_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        if self.se is not None:
            se = self.se
            se.reduce.weight.copy_(se.reduce.weight[:, order])
            se.expand.weight.copy_(se.expand.weight[order])
            se.expand.bias.copy_(se.expand.bias[order])
            # and the SE's own hidden channels, by the L1 norm of their expand weights
            hidden = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            se.expand.weight.copy_(se.expand.weight[:, hidden])
            se.reduce.weight.copy_(se.reduce.weight[hidden])
            se.reduce.bias.copy_(se.reduce.bias[hidden])
