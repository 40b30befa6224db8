from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_CODEC_RAW: _ClassVar[ImageCodec]
    IMAGE_CODEC_ZLIB: _ClassVar[ImageCodec]
    IMAGE_CODEC_JPEG: _ClassVar[ImageCodec]

class MaskCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_CODEC_BITPACK_ZLIB: _ClassVar[MaskCodec]
    MASK_CODEC_BITPACK: _ClassVar[MaskCodec]
    MASK_CODEC_RAW: _ClassVar[MaskCodec]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]
    DTYPE_INT16: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_RAW: _ClassVar[Codec]
    CODEC_ZLIB: _ClassVar[Codec]
    CODEC_BITPACK: _ClassVar[Codec]
    CODEC_BITPACK_ZLIB: _ClassVar[Codec]
    CODEC_JPEG: _ClassVar[Codec]
IMAGE_CODEC_RAW: ImageCodec
IMAGE_CODEC_ZLIB: ImageCodec
IMAGE_CODEC_JPEG: ImageCodec
MASK_CODEC_BITPACK_ZLIB: MaskCodec
MASK_CODEC_BITPACK: MaskCodec
MASK_CODEC_RAW: MaskCodec
DTYPE_UNSPECIFIED: DType
DTYPE_UINT8: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_BOOL: DType
DTYPE_INT16: DType
DTYPE_FLOAT16: DType
CODEC_RAW: Codec
CODEC_ZLIB: Codec
CODEC_BITPACK: Codec
CODEC_BITPACK_ZLIB: Codec
CODEC_JPEG: Codec

class StreamRequest(_message.Message):
    __slots__ = ("dataset", "pipeline", "batch_size", "seed", "shard_id", "num_shards", "resume", "wire", "max_batches", "copy_paste", "balanced_copy_paste", "self_training", "mosaic", "cutmix", "cp2")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    WIRE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_FIELD_NUMBER: _ClassVar[int]
    COPY_PASTE_FIELD_NUMBER: _ClassVar[int]
    BALANCED_COPY_PASTE_FIELD_NUMBER: _ClassVar[int]
    SELF_TRAINING_FIELD_NUMBER: _ClassVar[int]
    MOSAIC_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_FIELD_NUMBER: _ClassVar[int]
    CP2_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    pipeline: str
    batch_size: int
    seed: int
    shard_id: int
    num_shards: int
    resume: Position
    wire: WireOptions
    max_batches: int
    copy_paste: CopyPasteParams
    balanced_copy_paste: BalancedCopyPasteParams
    self_training: SelfTrainingParams
    mosaic: MosaicParams
    cutmix: CutMixParams
    cp2: CP2Params
    def __init__(self, dataset: _Optional[str] = ..., pipeline: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., shard_id: _Optional[int] = ..., num_shards: _Optional[int] = ..., resume: _Optional[_Union[Position, _Mapping]] = ..., wire: _Optional[_Union[WireOptions, _Mapping]] = ..., max_batches: _Optional[int] = ..., copy_paste: _Optional[_Union[CopyPasteParams, _Mapping]] = ..., balanced_copy_paste: _Optional[_Union[BalancedCopyPasteParams, _Mapping]] = ..., self_training: _Optional[_Union[SelfTrainingParams, _Mapping]] = ..., mosaic: _Optional[_Union[MosaicParams, _Mapping]] = ..., cutmix: _Optional[_Union[CutMixParams, _Mapping]] = ..., cp2: _Optional[_Union[CP2Params, _Mapping]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("epoch", "cursor", "batch_index")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    cursor: int
    batch_index: int
    def __init__(self, epoch: _Optional[int] = ..., cursor: _Optional[int] = ..., batch_index: _Optional[int] = ...) -> None: ...

class CopyPasteParams(_message.Message):
    __slots__ = ("output_size", "jitter_preset", "jitter_range", "flip_prob", "pad_value", "copy_paste", "max_num_pasted", "blend_sigma", "mask_occluded_thr", "bbox_occluded_thr", "paste_by_box", "shuffle", "repeat_factor_threshold", "drop_last", "on_error", "none_options")
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    JITTER_PRESET_FIELD_NUMBER: _ClassVar[int]
    JITTER_RANGE_FIELD_NUMBER: _ClassVar[int]
    FLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    PAD_VALUE_FIELD_NUMBER: _ClassVar[int]
    COPY_PASTE_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_PASTED_FIELD_NUMBER: _ClassVar[int]
    BLEND_SIGMA_FIELD_NUMBER: _ClassVar[int]
    MASK_OCCLUDED_THR_FIELD_NUMBER: _ClassVar[int]
    BBOX_OCCLUDED_THR_FIELD_NUMBER: _ClassVar[int]
    PASTE_BY_BOX_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FACTOR_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    NONE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    output_size: int
    jitter_preset: str
    jitter_range: JitterRange
    flip_prob: float
    pad_value: int
    copy_paste: bool
    max_num_pasted: int
    blend_sigma: float
    mask_occluded_thr: int
    bbox_occluded_thr: float
    paste_by_box: bool
    shuffle: bool
    repeat_factor_threshold: float
    drop_last: bool
    on_error: str
    none_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, output_size: _Optional[int] = ..., jitter_preset: _Optional[str] = ..., jitter_range: _Optional[_Union[JitterRange, _Mapping]] = ..., flip_prob: _Optional[float] = ..., pad_value: _Optional[int] = ..., copy_paste: _Optional[bool] = ..., max_num_pasted: _Optional[int] = ..., blend_sigma: _Optional[float] = ..., mask_occluded_thr: _Optional[int] = ..., bbox_occluded_thr: _Optional[float] = ..., paste_by_box: _Optional[bool] = ..., shuffle: _Optional[bool] = ..., repeat_factor_threshold: _Optional[float] = ..., drop_last: _Optional[bool] = ..., on_error: _Optional[str] = ..., none_options: _Optional[_Iterable[str]] = ...) -> None: ...

class JitterRange(_message.Message):
    __slots__ = ("min_scale", "max_scale")
    MIN_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_FIELD_NUMBER: _ClassVar[int]
    min_scale: float
    max_scale: float
    def __init__(self, min_scale: _Optional[float] = ..., max_scale: _Optional[float] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class BalancedCopyPasteParams(_message.Message):
    __slots__ = ("copy_paste", "bank_capacity", "bank_max_bytes", "bank_weighting", "bank_power", "bank_repeat_threshold", "bank_min_area")
    COPY_PASTE_FIELD_NUMBER: _ClassVar[int]
    BANK_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BANK_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    BANK_WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    BANK_POWER_FIELD_NUMBER: _ClassVar[int]
    BANK_REPEAT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BANK_MIN_AREA_FIELD_NUMBER: _ClassVar[int]
    copy_paste: CopyPasteParams
    bank_capacity: int
    bank_max_bytes: int
    bank_weighting: str
    bank_power: float
    bank_repeat_threshold: float
    bank_min_area: int
    def __init__(self, copy_paste: _Optional[_Union[CopyPasteParams, _Mapping]] = ..., bank_capacity: _Optional[int] = ..., bank_max_bytes: _Optional[int] = ..., bank_weighting: _Optional[str] = ..., bank_power: _Optional[float] = ..., bank_repeat_threshold: _Optional[float] = ..., bank_min_area: _Optional[int] = ...) -> None: ...

class SelfTrainingParams(_message.Message):
    __slots__ = ("copy_paste", "second_ratio", "paste_into_labelled", "second_dataset")
    COPY_PASTE_FIELD_NUMBER: _ClassVar[int]
    SECOND_RATIO_FIELD_NUMBER: _ClassVar[int]
    PASTE_INTO_LABELLED_FIELD_NUMBER: _ClassVar[int]
    SECOND_DATASET_FIELD_NUMBER: _ClassVar[int]
    copy_paste: CopyPasteParams
    second_ratio: float
    paste_into_labelled: bool
    second_dataset: str
    def __init__(self, copy_paste: _Optional[_Union[CopyPasteParams, _Mapping]] = ..., second_ratio: _Optional[float] = ..., paste_into_labelled: _Optional[bool] = ..., second_dataset: _Optional[str] = ...) -> None: ...

class MosaicParams(_message.Message):
    __slots__ = ("output_size", "jitter_preset", "jitter_range", "flip_prob", "pad_value", "mosaic_prob", "center_range", "paste_by_box", "repeat_factor_threshold", "shuffle", "drop_last", "on_error", "none_options")
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    JITTER_PRESET_FIELD_NUMBER: _ClassVar[int]
    JITTER_RANGE_FIELD_NUMBER: _ClassVar[int]
    FLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    PAD_VALUE_FIELD_NUMBER: _ClassVar[int]
    MOSAIC_PROB_FIELD_NUMBER: _ClassVar[int]
    CENTER_RANGE_FIELD_NUMBER: _ClassVar[int]
    PASTE_BY_BOX_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FACTOR_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    NONE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    output_size: int
    jitter_preset: str
    jitter_range: JitterRange
    flip_prob: float
    pad_value: int
    mosaic_prob: float
    center_range: Range
    paste_by_box: bool
    repeat_factor_threshold: float
    shuffle: bool
    drop_last: bool
    on_error: str
    none_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, output_size: _Optional[int] = ..., jitter_preset: _Optional[str] = ..., jitter_range: _Optional[_Union[JitterRange, _Mapping]] = ..., flip_prob: _Optional[float] = ..., pad_value: _Optional[int] = ..., mosaic_prob: _Optional[float] = ..., center_range: _Optional[_Union[Range, _Mapping]] = ..., paste_by_box: _Optional[bool] = ..., repeat_factor_threshold: _Optional[float] = ..., shuffle: _Optional[bool] = ..., drop_last: _Optional[bool] = ..., on_error: _Optional[str] = ..., none_options: _Optional[_Iterable[str]] = ...) -> None: ...

class CutMixParams(_message.Message):
    __slots__ = ("output_size", "scale", "ratio", "flip_prob", "normalize", "mix", "mixup_alpha", "cutmix_alpha", "cutmix_minmax", "prob", "switch_prob", "mode", "correct_lam", "label_smoothing", "num_classes", "return_unmixed", "shuffle", "drop_last", "on_error", "none_options")
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    FLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    MIXUP_ALPHA_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_ALPHA_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_MINMAX_FIELD_NUMBER: _ClassVar[int]
    PROB_FIELD_NUMBER: _ClassVar[int]
    SWITCH_PROB_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_LAM_FIELD_NUMBER: _ClassVar[int]
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    RETURN_UNMIXED_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    NONE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    output_size: int
    scale: Range
    ratio: Range
    flip_prob: float
    normalize: bool
    mix: bool
    mixup_alpha: float
    cutmix_alpha: float
    cutmix_minmax: Range
    prob: float
    switch_prob: float
    mode: str
    correct_lam: bool
    label_smoothing: float
    num_classes: int
    return_unmixed: bool
    shuffle: bool
    drop_last: bool
    on_error: str
    none_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, output_size: _Optional[int] = ..., scale: _Optional[_Union[Range, _Mapping]] = ..., ratio: _Optional[_Union[Range, _Mapping]] = ..., flip_prob: _Optional[float] = ..., normalize: _Optional[bool] = ..., mix: _Optional[bool] = ..., mixup_alpha: _Optional[float] = ..., cutmix_alpha: _Optional[float] = ..., cutmix_minmax: _Optional[_Union[Range, _Mapping]] = ..., prob: _Optional[float] = ..., switch_prob: _Optional[float] = ..., mode: _Optional[str] = ..., correct_lam: _Optional[bool] = ..., label_smoothing: _Optional[float] = ..., num_classes: _Optional[int] = ..., return_unmixed: _Optional[bool] = ..., shuffle: _Optional[bool] = ..., drop_last: _Optional[bool] = ..., on_error: _Optional[str] = ..., none_options: _Optional[_Iterable[str]] = ...) -> None: ...

class CP2Params(_message.Message):
    __slots__ = ("output_size", "stride", "scale", "ratio", "brightness", "contrast", "saturation", "hue", "jitter_prob", "grayscale_prob", "blur_prob", "blur_sigma", "flip_prob", "mask_area", "mask_ratio", "labelled", "normalize", "return_views", "shuffle", "drop_last", "on_error")
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    SATURATION_FIELD_NUMBER: _ClassVar[int]
    HUE_FIELD_NUMBER: _ClassVar[int]
    JITTER_PROB_FIELD_NUMBER: _ClassVar[int]
    GRAYSCALE_PROB_FIELD_NUMBER: _ClassVar[int]
    BLUR_PROB_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    FLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    MASK_AREA_FIELD_NUMBER: _ClassVar[int]
    MASK_RATIO_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    RETURN_VIEWS_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    output_size: int
    stride: int
    scale: Range
    ratio: Range
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_prob: float
    grayscale_prob: float
    blur_prob: float
    blur_sigma: Range
    flip_prob: float
    mask_area: Range
    mask_ratio: Range
    labelled: bool
    normalize: bool
    return_views: bool
    shuffle: bool
    drop_last: bool
    on_error: str
    def __init__(self, output_size: _Optional[int] = ..., stride: _Optional[int] = ..., scale: _Optional[_Union[Range, _Mapping]] = ..., ratio: _Optional[_Union[Range, _Mapping]] = ..., brightness: _Optional[float] = ..., contrast: _Optional[float] = ..., saturation: _Optional[float] = ..., hue: _Optional[float] = ..., jitter_prob: _Optional[float] = ..., grayscale_prob: _Optional[float] = ..., blur_prob: _Optional[float] = ..., blur_sigma: _Optional[_Union[Range, _Mapping]] = ..., flip_prob: _Optional[float] = ..., mask_area: _Optional[_Union[Range, _Mapping]] = ..., mask_ratio: _Optional[_Union[Range, _Mapping]] = ..., labelled: _Optional[bool] = ..., normalize: _Optional[bool] = ..., return_views: _Optional[bool] = ..., shuffle: _Optional[bool] = ..., drop_last: _Optional[bool] = ..., on_error: _Optional[str] = ...) -> None: ...

class WireOptions(_message.Message):
    __slots__ = ("image_codec", "jpeg_quality", "mask_codec", "zlib_level")
    IMAGE_CODEC_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MASK_CODEC_FIELD_NUMBER: _ClassVar[int]
    ZLIB_LEVEL_FIELD_NUMBER: _ClassVar[int]
    image_codec: ImageCodec
    jpeg_quality: int
    mask_codec: MaskCodec
    zlib_level: int
    def __init__(self, image_codec: _Optional[_Union[ImageCodec, str]] = ..., jpeg_quality: _Optional[int] = ..., mask_codec: _Optional[_Union[MaskCodec, str]] = ..., zlib_level: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("header", "batch", "epoch_end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_END_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    batch: Batch
    epoch_end: EpochEnd
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ..., epoch_end: _Optional[_Union[EpochEnd, _Mapping]] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("stream_id", "position", "epoch_length", "batches_in_epoch", "categories_json", "backend", "options_json")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BATCHES_IN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    position: Position
    epoch_length: int
    batches_in_epoch: int
    categories_json: str
    backend: str
    options_json: str
    def __init__(self, stream_id: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., epoch_length: _Optional[int] = ..., batches_in_epoch: _Optional[int] = ..., categories_json: _Optional[str] = ..., backend: _Optional[str] = ..., options_json: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("position", "images", "targets", "mixed", "cp2")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MIXED_FIELD_NUMBER: _ClassVar[int]
    CP2_FIELD_NUMBER: _ClassVar[int]
    position: Position
    images: Tensor
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    mixed: MixedTargets
    cp2: CP2Views
    def __init__(self, position: _Optional[_Union[Position, _Mapping]] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., mixed: _Optional[_Union[MixedTargets, _Mapping]] = ..., cp2: _Optional[_Union[CP2Views, _Mapping]] = ...) -> None: ...

class MixedTargets(_message.Message):
    __slots__ = ("targets", "labels", "lam", "unmixed")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    UNMIXED_FIELD_NUMBER: _ClassVar[int]
    targets: Tensor
    labels: Tensor
    lam: Tensor
    unmixed: Tensor
    def __init__(self, targets: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ..., lam: _Optional[_Union[Tensor, _Mapping]] = ..., unmixed: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class CP2Views(_message.Message):
    __slots__ = ("image_q", "image_k", "mask_q", "mask_k", "mask_q_feat", "mask_k_feat", "views")
    class ViewsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    IMAGE_Q_FIELD_NUMBER: _ClassVar[int]
    IMAGE_K_FIELD_NUMBER: _ClassVar[int]
    MASK_Q_FIELD_NUMBER: _ClassVar[int]
    MASK_K_FIELD_NUMBER: _ClassVar[int]
    MASK_Q_FEAT_FIELD_NUMBER: _ClassVar[int]
    MASK_K_FEAT_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    image_q: Tensor
    image_k: Tensor
    mask_q: Tensor
    mask_k: Tensor
    mask_q_feat: Tensor
    mask_k_feat: Tensor
    views: _containers.MessageMap[str, Tensor]
    def __init__(self, image_q: _Optional[_Union[Tensor, _Mapping]] = ..., image_k: _Optional[_Union[Tensor, _Mapping]] = ..., mask_q: _Optional[_Union[Tensor, _Mapping]] = ..., mask_k: _Optional[_Union[Tensor, _Mapping]] = ..., mask_q_feat: _Optional[_Union[Tensor, _Mapping]] = ..., mask_k_feat: _Optional[_Union[Tensor, _Mapping]] = ..., views: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("image_id", "boxes", "labels", "masks", "area", "iscrowd", "pasted", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    ISCROWD_FIELD_NUMBER: _ClassVar[int]
    PASTED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    image_id: int
    boxes: Tensor
    labels: Tensor
    masks: Tensor
    area: Tensor
    iscrowd: Tensor
    pasted: Tensor
    extra: _containers.MessageMap[str, Tensor]
    def __init__(self, image_id: _Optional[int] = ..., boxes: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Union[Tensor, _Mapping]] = ..., masks: _Optional[_Union[Tensor, _Mapping]] = ..., area: _Optional[_Union[Tensor, _Mapping]] = ..., iscrowd: _Optional[_Union[Tensor, _Mapping]] = ..., pasted: _Optional[_Union[Tensor, _Mapping]] = ..., extra: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class EpochEnd(_message.Message):
    __slots__ = ("epoch", "next", "next_epoch_length", "next_batches_in_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    NEXT_EPOCH_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NEXT_BATCHES_IN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    next: Position
    next_epoch_length: int
    next_batches_in_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., next: _Optional[_Union[Position, _Mapping]] = ..., next_epoch_length: _Optional[int] = ..., next_batches_in_epoch: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "codec", "data", "parts")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    codec: Codec
    data: bytes
    parts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., codec: _Optional[_Union[Codec, str]] = ..., data: _Optional[bytes] = ..., parts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoReply(_message.Message):
    __slots__ = ("version", "datasets", "pipelines", "limits", "auth_required", "backend")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    version: str
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineInfo]
    limits: Limits
    auth_required: bool
    backend: str
    def __init__(self, version: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ..., pipelines: _Optional[_Iterable[_Union[PipelineInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., auth_required: _Optional[bool] = ..., backend: _Optional[str] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PipelineInfo(_message.Message):
    __slots__ = ("name", "description", "defaults")
    class DefaultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    defaults: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., defaults: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_streams", "max_batch_size", "max_output_size", "max_message_bytes", "prefetch_batches", "max_num_pasted", "max_stream_bytes")
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_PASTED_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_streams: int
    max_batch_size: int
    max_output_size: int
    max_message_bytes: int
    prefetch_batches: int
    max_num_pasted: int
    max_stream_bytes: int
    def __init__(self, max_streams: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_output_size: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., prefetch_batches: _Optional[int] = ..., max_num_pasted: _Optional[int] = ..., max_stream_bytes: _Optional[int] = ...) -> None: ...
