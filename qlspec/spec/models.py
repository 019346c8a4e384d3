"""The application spec: one pydantic model per section. The models are the documentation.

Every field has a type, a default where one makes sense, a description with its unit, and its
allowed range as a constraint. Unknown keys are errors. The JSON Schema (`qlspec schema`,
`specs/app.schema.json`) and every `qlspec validate` message come from these classes only.

Fields whose value is secret (deploy key paths, passwords) carry ``json_schema_extra={"secret": True}``;
`qlspec diff` and `qlspec plan` never print them in full. Fields that change no result say what they
change instead (``effect``: deployment, access, speed or naming; `qlspec.spec.effects`): only the
others are part of the stage keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from qlspec.spec.effects import ACCESS, DEPLOYMENT, NAMING, SPEED

SECRET = {"secret": True, **ACCESS}

QuantBits = Literal[2, 4, 6, 8]
PLACEHOLDER = "/path/to/"  # how shipped examples mark the paths a user fills in
Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
        description="Lower-case name: letters, digits, '.', '_' or '-'; used as the build folder name.",
        json_schema_extra=NAMING,
    ),
]


def existing_path(value: Path | None, info: ValidationInfo, *, need_file: bool) -> Path | None:
    """A path field resolved against the spec file's folder (validation context `base_dir`); it must exist."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    shown = str(value)[:80] + ("..." if len(str(value)) > 80 else "")
    try:
        path = value.expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        found = path.is_file() if need_file else path.exists()
        resolved = path.resolve() if found else None
    except (RuntimeError, OSError, ValueError) as e:  # ~nosuchuser, a name too long, a NUL byte
        raise ValueError(f"unusable path {shown!r} ({e.__class__.__name__}: {str(e)[:60]})") from None
    if resolved is None:
        shown = str(path)[:120] + ("..." if len(str(path)) > 120 else "")
        hint = " (a placeholder: fill in the path of your own copy)" if str(value).startswith(PLACEHOLDER) else ""
        raise ValueError((f"file not found: {shown}" if need_file else f"not found: {shown}") + hint)
    return resolved


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are immutable once loaded, and no
    number is NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------
# preprocess / postprocess


class Normalise(SpecModel):
    """Input normalisation applied to every channel: x = (pixel - mean) / std, in float32.

    The input quantiser follows from it (`qlspec.input_grid`): eps = 1/std, signed 8-bit
    codes for a mean in [127.5, 128], unsigned for mean 0, floor for half-integer ``p - mean``
    (3DDFA's 127.5: pixel p -> p - 128), round for integer ones. A normalisation on which the 256
    pixel values do not map one-to-one onto 8-bit codes is refused here."""

    mean: float = Field(127.5, allow_inf_nan=False, description="Subtracted from each 8-bit pixel value.")
    std: float = Field(128.0, gt=0, allow_inf_nan=False, description="Divisor after the mean is subtracted.")

    @model_validator(mode="after")
    def _eight_bit_input(self) -> Self:
        from qlspec.input_grid import input_grid

        input_grid(self.mean, self.std)  # ValueError says what to change
        return self


class Preprocess(SpecModel):
    """From a stored face crop (uint8, BGR, as the data stage writes it) to the network input tensor.

    The crop itself is the data set's: the synthetic renderer draws the face in the frame, the real
    loaders cut 3DDFA's crops (`qlspec.data.real`)."""

    size: Literal[120] = Field(120, description="Side of the square network input, pixels (3DDFA uses 120).")
    channel_order: Literal["BGR", "RGB"] = Field(
        "BGR", description="Channel order the network takes: BGR as stored (3DDFA), or RGB (the channels are flipped before normalising)."
    )
    normalise: Normalise = Field(default_factory=Normalise, description="Pixel normalisation; the input quantiser derives from it.")


class Postprocess(SpecModel):
    """From the network output to the application's result."""

    kind: Literal["3ddfa-landmarks"] = Field("3ddfa-landmarks", description="62 3DMM parameters -> 68 2D landmarks in the crop frame.")
    points: Literal[68] = Field(68, description="Number of landmarks reconstructed.")


# --------------------------------------------------------------------------------------------------
# network, data, training


class ParamStatsValues(SpecModel):
    """A network's output normalisation written out: it regresses ``(param - mean) / std`` per parameter."""

    mean: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        min_length=62, max_length=62, description="Mean of each of the 62 parameters (3DDFA's order: 12 pose, 40 shape, 10 expression)."
    )
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=62, max_length=62, description="Standard deviation of each of the 62 parameters (> 0)."
    )


def _param_stats_form(value: Any) -> str:
    """The union's tag: a mapping is the values written out, anything else a file name."""
    return "param-stats-values" if isinstance(value, (dict, ParamStatsValues)) else "param-stats-file"


ParamStatsSource = Annotated[
    Annotated[Path, Tag("param-stats-file")] | Annotated[ParamStatsValues, Tag("param-stats-values")],
    Discriminator(_param_stats_form),
]


class _NetworkBase(SpecModel):
    pretrained: Path | None = Field(
        None,
        description="A 3DDFA_V2 checkpoint of this architecture (the layout `qlspec.nets.registry` names) to "
        "start from, relative to the spec file; null trains from scratch. `qlspec validate` checks its keys and "
        "shapes against the network. With training.epochs 0 it is used as it is (no training step).",
    )
    param_stats: ParamStatsSource | None = Field(
        None,
        description="The network's own output normalisation, used whatever data.kind is (every rung, loss and "
        "landmark): a file relative to the spec (3DDFA_V2's param_mean_std_62d_120x120.pkl: keys 'mean' and 'std', "
        "(62,) each; or an .npz with 'mean' and 'std', such as a data stage's param_stats.npz), or {mean: [62 "
        "numbers], std: [62 numbers]}; null: the data stage's (data.param_stats, else the training parameters').",
    )

    @field_validator("pretrained")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return existing_path(value, info, need_file=True)

    @field_validator("param_stats")
    @classmethod
    def _stats_file_exists(cls, value: Any, info: ValidationInfo) -> Any:
        return existing_path(value, info, need_file=True) if isinstance(value, Path) else value


class MobileNetV1Network(_NetworkBase):
    """3DDFA_V2's MobileNet-V1 regressor of 62 3DMM parameters (no residual adds)."""

    arch: Literal["3ddfa-mobilenet-v1"] = Field("3ddfa-mobilenet-v1", description="Architecture (`qlspec.nets.registry`).")
    # float literals: pydantic checks them, Python's typing does not allow them
    width: Literal[0.25, 0.5, 0.75, 1.0] = Field(0.5, description="Channel width multiplier (3DDFA_V2 ships 1.0 and 0.5).")  # type: ignore[valid-type]


class ResNet22Network(_NetworkBase):
    """3DDFA_V2's ResNet-22 regressor of 62 3DMM parameters (residual BasicBlocks)."""

    arch: Literal["3ddfa-resnet22"] = Field(description="Architecture (`qlspec.nets.registry`).")
    width: Literal[0.0625, 0.125, 0.25, 0.5, 1.0] = Field(  # type: ignore[valid-type]  # float literals, as above
        0.125,
        description="Channel width multiplier: 1.0 is 3DDFA_V2's (2.66 GMAC at 120x120), 0.125 trains in minutes on 2 cores (43 MMAC).",
    )


def _network_arch(value: Any) -> str:
    """The union's tag: ``arch``, MobileNet-V1 when absent (specs written before the registry)."""
    if isinstance(value, dict):
        return value.get("arch", "3ddfa-mobilenet-v1")
    return getattr(value, "arch", "3ddfa-mobilenet-v1")


Network = Annotated[
    Annotated[MobileNetV1Network, Tag("3ddfa-mobilenet-v1")] | Annotated[ResNet22Network, Tag("3ddfa-resnet22")],
    Discriminator(_network_arch),
]


class SyntheticData(SpecModel):
    """The embedded procedural face data set: deterministic from `seed`, nothing downloaded."""

    kind: Literal["synthetic"] = Field("synthetic", description="Procedural morphable-face images rendered locally.")
    train: int = Field(4000, ge=16, le=1_000_000, description="Number of training images.")
    val: int = Field(500, ge=8, le=100_000, description="Number of validation images (NME and every verification rung).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the renderer; the same seed gives the same bytes.")


class Real3DDFAData(SpecModel):
    """3DDFA's real data: 300W-LP for training, AFLW2000-3D for validation, with the user's own BFM.

    Nothing is shipped or downloaded: every path is the user's own copy (relative to the spec file).
    """

    kind: Literal["300w-lp"] = Field(description="Train on 300W-LP, validate on AFLW2000-3D.")
    root: Path = Field(description="300W-LP folder: images with same-name .mat files (Pose_Para, Shape_Para, Exp_Para, pt2d).")
    val_root: Path = Field(description="AFLW2000-3D folder: images with same-name .mat files (pt3d_68, Pose_Para).")
    bfm: Path = Field(
        description="The user's basis: 3DDFA_V2's bfm_noneck_v3.pkl, or a folder with the 68-point "
        "text basis (u_base.txt, w_shp_base.txt, w_exp_base.txt). Academic licence: never shipped."
    )
    param_stats: Path | None = Field(
        None,
        description="3DDFA's param_mean_std_62d_120x120.pkl (needed with pretrained 3DDFA_V2 weights); "
        "null: computed from the training parameters.",
    )
    landmarks: Literal["pt2d", "model"] = Field(
        "pt2d", description="Training landmarks: the annotated pt2d, or the basis's landmarks of the parameters."
    )
    train_limit: int | None = Field(None, ge=16, description="Use only the first N training images (sorted); null: all.")
    val_limit: int | None = Field(None, ge=8, description="Use only the first N validation images (sorted); null: all.")

    @field_validator("root", "val_root", "bfm", "param_stats")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return existing_path(value, info, need_file=info.field_name == "param_stats")


Data = Annotated[SyntheticData | Real3DDFAData, Field(discriminator="kind")]


class Optimizer(SpecModel):
    """Optimiser and learning-rate schedule of float training."""

    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="'sgd' (with momentum), 'adam' or 'adamw'.")
    lr: float = Field(0.05, gt=0, le=10, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam).")
    nesterov: bool = Field(True, description="Nesterov momentum (sgd only).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["cosine", "step"] = Field(
        "cosine", description="'cosine' decay to 0, or 'step': x0.2 at 60% and 85% of the steps (3DDFA's decay)."
    )
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up from lr/10, in epochs.")


class Loss(SpecModel):
    """Training loss: param_weight * MSE of the normalised parameters + landmark_weight * landmark term."""

    param_weight: float = Field(1.0, ge=0, description="Weight of the normalised-parameter MSE (3DDFA's PDC).")
    landmark_weight: float = Field(10.0, ge=0, description="Weight of the 68-landmark term.")
    landmark: Literal["nme", "vdc"] = Field(
        "nme",
        description="Landmark term: 'nme' the normalised mean error itself; 'vdc' 3DDFA's vertex distance "
        "(mean squared 3D distance / box size squared).",
    )

    @model_validator(mode="after")
    def _something_to_learn(self) -> Self:
        if self.param_weight == 0 and self.landmark_weight == 0:
            raise ValueError("param_weight and landmark_weight are both 0: nothing to learn")
        return self


class Loader(SpecModel):
    """Preparation of training batches (decoding and normalising the stored images)."""

    workers: int = Field(
        0, ge=0, le=64, description="Worker processes preparing batches per training process; 0: in the training process itself."
    )
    pin_memory: Literal["auto"] | bool = Field(
        "auto", description="Page-locked batches for faster copies to the GPU; 'auto': when training on CUDA (no effect on CPU)."
    )


class Distributed(SpecModel):
    """Data-parallel training: each process trains on an equal share of every batch, gradients are averaged
    (DistributedDataParallel), batch-norm statistics and quantiser statistics are reduced across processes."""

    processes: int = Field(1, ge=1, le=256, description="Training processes per node (on CUDA: one per GPU).")
    backend: Literal["gloo", "nccl"] = Field("gloo", description="torch.distributed backend: 'gloo' (CPU) or 'nccl' (CUDA GPUs).")
    nodes: int = Field(
        1,
        ge=1,
        le=1024,
        description="Machines taking part; more than one needs torchrun's rendezvous on every node (README, 'GPUs and several processes').",
    )
    master_addr: str = Field("127.0.0.1", min_length=1, description="Address of the rank-0 process (spawned processes on one node).")
    master_port: int = Field(0, ge=0, le=65535, description="TCP port of the rank-0 process; 0: a free port picked at launch.")

    @property
    def world_size(self) -> int:
        """Training processes in all: processes per node x nodes."""
        return self.processes * self.nodes


class Training(SpecModel):
    """Float training of the network on the data set."""

    epochs: int = Field(
        8,
        ge=0,
        le=1000,
        description="Training epochs; 0 uses network.pretrained as it is: no "
        "training step runs and no batch-norm statistic moves (needs network.pretrained, and the "
        "network's output normalisation in network.param_stats or data.param_stats).",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Images per step.")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="Optimiser and its hyper-parameters.")
    loss: Loss = Field(default_factory=Loss, description="Loss function.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of initialisation and shuffling.")
    threads: int = Field(2, ge=1, le=256, description="CPU threads torch may use (per training process).", json_schema_extra=SPEED)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where float training and QAT run: 'cuda' (the GPU; with several processes, one GPU per "
        "process on each node), 'cpu', or 'auto' (cuda when torch sees a GPU, else cpu). Changes speed and "
        "floating-point rounding noise, not the trained result beyond it.",
        json_schema_extra=SPEED,
    )
    precision: Literal["auto", "float32"] = Field(
        "auto",
        description="'auto': on CUDA, the float phase runs its forward pass under bf16 autocast (where the GPU "
        "supports bf16; the loss stays float32) with channels_last tensors; QAT and every CPU run stay float32. "
        "'float32': float32 everywhere.",
        json_schema_extra=SPEED,
    )
    compile: bool = Field(
        False,
        description="Run the training steps (forward and backward) of float training and QAT through "
        "torch.compile (inductor): a one-off compile (a minute or more on a CPU), then steps that are faster only "
        "where the compiled kernels beat eager ones (on a 2-core CPU they did not: bench/train_speed.py --compile). "
        "Validation and checkpoints use the net itself; a net that fails to compile trains eagerly, with one line "
        "saying why. Changes speed and floating-point rounding noise, not the trained result beyond it.",
        json_schema_extra=SPEED,
    )
    loader: Loader = Field(default_factory=Loader, description="How training batches are prepared.", json_schema_extra=SPEED)
    distributed: Distributed = Field(
        default_factory=Distributed,
        description="Data-parallel training in several processes (torch.distributed).",
        json_schema_extra=SPEED,
    )

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> Self:
        world = self.distributed.world_size
        if self.batch_size % world:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by distributed.processes x distributed.nodes ({world}): "
                "every process takes an equal share of each batch"
            )
        return self


# --------------------------------------------------------------------------------------------------
# quantisation and export


class Bits(SpecModel):
    """Bit-widths of the quantised network."""

    weights: QuantBits = Field(8, description="Bits per weight.")
    activations: QuantBits = Field(8, description="Bits per activation.")


class WeightQuant(SpecModel):
    """How weights are quantised (symmetric, rounded)."""

    granularity: Literal["per-channel", "per-layer"] = Field("per-channel", description="One scale per output channel, or per layer.")
    init: Literal["max", "std", "const", "percentile"] = Field("max", description="Initial clipping bound of the weights.")


class ActivationQuant(SpecModel):
    """How activations are quantised (PACT: learned clipping bound, floored)."""

    init: Literal["max", "std", "const", "percentile"] = Field("const", description="Initial clipping bound.")
    clip: float = Field(6.0, gt=0, description="Initial bound for init 'const' (activation units).")
    percentile: float = Field(99.9, gt=50, le=100, description="Percentile for init 'percentile', %.")
    rounding: Literal["floor", "half_up"] = Field(
        "floor",
        description="'floor': PACT's and QuantLib's default; 'half_up': to the nearest level, halves up "
        "(QuantLab's MobileNet configs set rounding true). FQ and the integer network apply the same rule.",
    )
    learn_clip: bool = Field(
        True,
        description="Learn the upper clipping bound by backprop (PACT). QuantLib's PACTUnsignedAct with its "
        "default symm=True sets the bound when quantisation starts and never trains it: false reproduces that.",
    )


class QatSchedule(SpecModel):
    """PACT quantisation-aware fine-tuning, run after float training."""

    epochs: int = Field(6, ge=1, le=1000, description="QAT epochs.")
    lr: float = Field(1e-3, gt=0, le=10, description="Learning rate during QAT.")
    start_epoch: int = Field(0, ge=0, description="Epoch (0-based) at which quantisation switches on.")
    freeze_clip_at: int | None = Field(5, ge=0, description="Epoch (0-based) from which PACT clip bounds stop learning; null: never.")
    from_float: bool = Field(True, description="Start from the trained float network (QAFT); false: from scratch.")

    @model_validator(mode="after")
    def _inside_schedule(self) -> Self:
        if self.start_epoch >= self.epochs:
            raise ValueError(f"start_epoch ({self.start_epoch}) must be < epochs ({self.epochs})")
        if self.freeze_clip_at is not None and self.freeze_clip_at >= self.epochs:
            raise ValueError(f"freeze_clip_at ({self.freeze_clip_at}) must be < epochs ({self.epochs})")
        return self


class Ptq(SpecModel):
    """Post-training quantisation: bounds from calibration, no gradient step."""

    calibration: Literal["minmax", "percentile", "mse"] = Field("percentile", description="How bounds are set from calibration data.")
    samples: int = Field(256, ge=1, le=100_000, description="Training images used for calibration.")
    percentile: float = Field(99.99, gt=50, le=100, description="Percentile for 'percentile' calibration, %.")
    fold_bn: bool = Field(True, description="Fold batch-norm into convolutions before calibration.")


class Quantisation(SpecModel):
    """From float to fake-quantised network: PACT QAT, PTQ, or none."""

    algorithm: Literal["pact", "ptq", "none"] = Field("pact", description="'pact' QAT, 'ptq' calibration only, 'none' float only.")
    bits: Bits = Field(default_factory=Bits, description="Bit-widths.")
    weights: WeightQuant = Field(default_factory=WeightQuant, description="Weight quantisers.")
    activations: ActivationQuant = Field(default_factory=ActivationQuant, description="Activation quantisers.")
    schedule: QatSchedule = Field(default_factory=QatSchedule, description="QAT schedule (algorithm 'pact').")
    ptq: Ptq = Field(default_factory=Ptq, description="Calibration (algorithm 'ptq').")


class Compare(SpecModel):
    """PTQ against PACT QAT from the same float network, at several bit-widths (stage `compare`)."""

    algorithms: list[Literal["ptq", "pact"]] = Field(
        default_factory=list, description="Algorithms to compare; empty: no comparison (the stage is skipped)."
    )
    bits: list[QuantBits] = Field(
        default_factory=lambda: list[QuantBits]([8, 4]), min_length=1, description="Bit-widths, each used for weights and activations."
    )


class Export(SpecModel):
    """Fake-to-true integerisation and the QuantLab-format ONNX file."""

    flavour: Literal["deeploy", "dory"] = Field(
        "deeploy", description="'deeploy': RequantShift nodes; 'dory': Mul/Add/Div/Floor/Clip with annotations."
    )
    requant_bits: int | None = Field(
        None,
        ge=8,
        le=31,
        description="Bits D of every requantisation divisor div = 2^D (QuantLib's default is 24, QuantLab's "
        "export scripts use 19). Unset: each requantiser gets the largest D for which x*mul + add fits int32 "
        "(as Deeploy's and DORY's kernels compute it) with `headroom` to spare on the calibration and "
        "validation images.",
    )
    headroom: float = Field(
        2.0,
        ge=1.0,
        le=2.0**16,
        allow_inf_nan=False,
        description="How far every requantiser's x*mul + add must stay below 2^31 on the calibration and "
        "validation images when D is fitted: 2 leaves one spare bit for inputs not seen.",
    )


# --------------------------------------------------------------------------------------------------
# target, verification, deployment


class Target(SpecModel):
    """The board and the backend the application is built for."""

    board: Literal["rpi4", "host"] = Field("rpi4", description="'rpi4': Raspberry Pi 4 (Cortex-A72, aarch64); 'host': this machine.")
    cpu: Literal["cortex-a72", "native"] = Field("cortex-a72", description="CPU the code is tuned for and emulated as.")
    backend: Literal["armcl", "cpu", "reference"] = Field(
        "armcl",
        description="'armcl': ARM Compute Library 20.08 C++, cross-built for the board; 'cpu': the same generated C++ "
        "and AI application without ACL, built for and run on this machine (rung CPU); 'reference': numpy engine only.",
    )
    threads: int = Field(
        4, ge=1, le=64, description="Worker threads on the board (a run-time argument of the app).", json_schema_extra=SPEED
    )
    output_stage: Literal["exact", "armcl-native"] = Field(
        "exact",
        description="'exact': every requantiser is the project's RequantShift kernel, bit-exact against GRAPH; "
        "'armcl-native': 8-bit convolutions and linear layers end in ARM-CL's fused fixed-point output stage (faster, not "
        "the contract: the verify stage reports how many outputs differ instead of requiring none).",
    )

    @model_validator(mode="after")
    def _native_needs_armcl(self) -> Self:
        if self.output_stage == "armcl-native" and self.backend != "armcl":
            raise ValueError(f"output_stage armcl-native needs backend armcl (got {self.backend})")
        return self


class Verify(SpecModel):
    """The verification ladder (FP -> FQ -> TQ -> ONNX -> GRAPH -> ARMCL)."""

    samples: int = Field(64, ge=1, le=100_000, description="Validation images run through every rung (at most data.val).")
    emulator: Literal["qemu", "board"] = Field("qemu", description="Run the ARM-CL rung under qemu-aarch64 here, or on the board.")


class Deploy(SpecModel):
    """Where and how `qlspec apply` (stage `deploy`) and `qlspec deploy` push the built application, over
    SSH with fabric.

    On the board, `path` holds ``releases/<id>/`` (one folder per distinct build, named by the digest
    of its files, so an unchanged build uploads nothing), ``current`` (a link switched atomically to
    a release only after it ran on the sample images and matched GRAPH), ``history`` and ``runs/``.
    Host keys are always verified against `known_hosts`; trusting a new key is the command-line flag
    ``--trust-new-host-key``, never a spec setting.
    """

    enabled: bool = Field(False, description="Deploy at the end of `qlspec apply` (stage deploy).")
    host: str = Field(
        "rpi4.local", min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.:\[\]-]+$", description="Board host name or address."
    )
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("pi", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="SSH user.")
    key: str | None = Field(
        "~/.ssh/id_ed25519",
        max_length=4096,
        json_schema_extra=ACCESS,
        description="Private key file (relative to the spec's folder, or ~); null: ssh-agent only.",
    )
    agent: bool = Field(True, description="Also offer the keys of a running ssh-agent.", json_schema_extra=ACCESS)
    passphrase: str | None = Field(None, description="Passphrase of `key`, if it has one (prefer ssh-agent).", json_schema_extra=SECRET)
    password: str | None = Field(None, description="SSH password, if the board takes no key (discouraged).", json_schema_extra=SECRET)
    known_hosts: str = Field(
        "~/.ssh/known_hosts",
        min_length=1,
        max_length=4096,
        json_schema_extra=ACCESS,
        description="File of trusted host keys (OpenSSH format; relative to the spec's folder, or ~).",
    )
    path: str = Field(
        "/home/pi/apps/qlspec-app",
        min_length=2,
        max_length=1024,
        pattern=r"^(/|~/)[^\x00-\x1f\x7f]*$",
        description="Folder on the board holding the releases (absolute, or ~/ for the user's home).",
    )
    keep_releases: int = Field(3, ge=1, le=100, description="Releases kept on the board (the current one among them).")
    install: Literal["push", "build"] = Field(
        "push",
        description="'push': upload the binary cross-built here; 'build': upload the CMake project and build it "
        "on the board (needs cmake, g++ and libarm-compute-dev there).",
    )
    cmake_args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=32, description="Extra CMake configure arguments for install: build."
    )
    launcher: str = Field(
        "",
        max_length=1024,
        description="Command prefix the board runs the app with (shell words), e.g. "
        "'qemu-aarch64 -cpu cortex-a72 -L /' for an x86 test board; empty on a Raspberry Pi.",
    )
    samples: int = Field(16, ge=1, le=100_000, description="Validation images the board runs (at most verify.samples).")
    repeat: int = Field(3, ge=0, le=1000, description="Timed passes over the samples for the median latency.", json_schema_extra=SPEED)
    connect_timeout: float = Field(15.0, gt=0, le=600, description="Seconds to wait for the SSH connection.", json_schema_extra=ACCESS)
    command_timeout: float = Field(
        900.0, gt=0, le=86_400, description="Seconds any one command on the board may take.", json_schema_extra=ACCESS
    )

    @field_validator("launcher")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        import shlex

        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must be one line of shell words without control characters")
        try:
            shlex.split(value)
        except ValueError as e:
            raise ValueError(f"must split into shell words ({e})") from None
        return value


# --------------------------------------------------------------------------------------------------
# the whole application


class AppSpec(SpecModel):
    """One AI application, from data to a deployed, verified edge binary."""

    apiVersion: Literal["qlspec/v1"] = Field("qlspec/v1", description="Spec format version.", json_schema_extra=NAMING)
    name: Name
    description: str = Field("", description="Free text shown in reports.", json_schema_extra=NAMING)
    extends: list[str] = Field(
        default_factory=list,
        description="Spec fragments deep-merged under this file, in order: paths relative to this file, "
        "or names in the spec library (e.g. boards/rpi4.yaml).",
    )
    preprocess: Preprocess = Field(default_factory=Preprocess, description="Image -> network input.")
    network: Network = Field(default_factory=MobileNetV1Network, description="The float network (a union on `arch`).")
    data: Data = Field(default_factory=SyntheticData, description="Training and validation data.")
    training: Training = Field(default_factory=Training, description="Float training.")
    quantisation: Quantisation = Field(default_factory=Quantisation, description="Quantisation algorithm and bit-widths.")
    compare: Compare = Field(default_factory=Compare, description="PTQ-vs-QAT comparison.")
    export: Export = Field(default_factory=Export, description="Integerisation and ONNX export.")
    postprocess: Postprocess = Field(default_factory=Postprocess, description="Network output -> result.")
    target: Target = Field(default_factory=Target, description="Board and backend.")
    verify: Verify = Field(default_factory=Verify, description="Verification ladder.")
    deploy: Deploy = Field(default_factory=Deploy, description="Deployment to the board.", json_schema_extra=DEPLOYMENT)

    @model_validator(mode="after")
    def _samples_within_validation_set(self) -> Self:
        if isinstance(self.data, SyntheticData) and self.verify.samples > self.data.val:
            raise ValueError(f"verify.samples ({self.verify.samples}) must be <= data.val ({self.data.val})")
        if self.deploy.enabled and self.deploy.samples > self.verify.samples:
            raise ValueError(f"deploy.samples ({self.deploy.samples}) must be <= verify.samples ({self.verify.samples})")
        return self

    @model_validator(mode="after")
    def _pretrained_as_it_is(self) -> Self:
        data_stats = getattr(self.data, "param_stats", None)
        if self.network.param_stats is not None and data_stats is not None:
            raise ValueError(
                "network.param_stats and data.param_stats are both set: keep network.param_stats (the "
                "network's own output normalisation) and drop data.param_stats"
            )
        if self.training.epochs == 0 and self.network.pretrained is None:
            raise ValueError(
                "training.epochs 0 uses network.pretrained as it is, but network.pretrained is null: name "
                "the checkpoint, or train (epochs >= 1)"
            )
        if self.training.epochs == 0 and self.network.param_stats is None and data_stats is None:
            raise ValueError(
                "training.epochs 0 uses network.pretrained as it is: name the output normalisation it was "
                "trained with in network.param_stats (3DDFA_V2: param_mean_std_62d_120x120.pkl)"
            )
        return self
