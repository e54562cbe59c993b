"""Element and scale number formats: generic floating point ExMy, integers, and the named presets.

A format only describes a value set (which reals are representable, the largest finite value, the
storage dtype); rounding onto it lives in `rounding.py`. Values are always handled as float32 during
arithmetic and stored in a native low-bit dtype where ml_dtypes has one (so memory use is real),
otherwise as exact values in the narrowest wider float that holds every value.
"""
from __future__ import annotations

import dataclasses
import math
import re

import jax.numpy as jnp

SPECIALS = ("none", "fn", "ieee")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FloatFormat:
    """Sign + `exp_bits` exponent + `man_bits` mantissa, bias 2^(E-1)-1.

    specials: "none" (every code finite: E2M1, E2M3, E3M2, qtorch-style), "fn" (OCP finite: only the
    all-ones code is NaN, no infinities: E4M3), "ieee" (top exponent reserved for inf/NaN: E5M2, bf16).
    `signed=False` gives the unsigned scale formats (UE4M3, UE5M3).
    """

    exp_bits: int
    man_bits: int
    specials: str = "none"
    subnormals: bool = True
    signed: bool = True
    name: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        if not 1 <= self.exp_bits <= 8:
            raise ValueError(f"FloatFormat.exp_bits must be in 1..8, got {self.exp_bits}")
        if not 0 <= self.man_bits <= 10:
            raise ValueError(f"FloatFormat.man_bits must be in 0..10, got {self.man_bits}")
        if self.specials not in SPECIALS:
            raise ValueError(f"FloatFormat.specials must be one of {SPECIALS}, got {self.specials!r}")
        if self.specials == "fn" and self.man_bits == 0 and self.exp_bits == 1:
            raise ValueError("FloatFormat e1m0 'fn' has no finite nonzero value")
        if not self.name:
            suffix = {"none": "", "fn": "fn", "ieee": "ieee"}[self.specials]
            sub = "" if self.subnormals else "_nosub"
            object.__setattr__(self, "name", f"{'' if self.signed else 'u'}e{self.exp_bits}m{self.man_bits}{suffix}{sub}")

    kind = "float"

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest binade holding a finite value (MX's emax_elem)."""
        top = 2**self.exp_bits - 1 - self.bias
        if self.specials == "ieee" or (self.specials == "fn" and self.man_bits == 0):
            return top - 1
        return top

    @property
    def max_value(self) -> float:
        m = self.man_bits
        if self.specials == "fn" and m > 0:
            frac = (2 ** (m + 1) - 2) / 2**m  # the all-ones mantissa is NaN
        else:
            frac = (2 ** (m + 1) - 1) / 2**m
        return math.ldexp(frac, self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.man_bits) if self.subnormals else self.min_normal

    @property
    def bits(self) -> int:
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def storage_dtype(self):
        native = _NATIVE_FLOAT.get((self.exp_bits, self.man_bits, self.specials, self.signed, self.subnormals))
        if native is not None:
            return native
        if self.exp_bits <= 8 and self.man_bits <= 7:
            return jnp.bfloat16  # every value of such a format is exact in bf16
        return jnp.float32

    @property
    def native_dtype(self):
        """The XLA dtype whose values are exactly this format's (None for FP6 and generic ExMy)."""
        return _NATIVE_EXACT.get((self.exp_bits, self.man_bits, self.specials, self.signed, self.subnormals))

    def describe(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True, kw_only=True)
class IntFormat:
    """Integer codes times 2^-frac_bits.

    symmetric: codes in ±(2^(b-1)-1) (drops -2^(b-1), which removes a gradient bias); otherwise the
    full range [-2^(b-1), 2^(b-1)-1]. centered: the 2^b levels sit at half-integers ±(j+1/2), the
    QuEST uniform grid with no zero. frac_bits=6 with 8 bits is the MXINT8 element (1.6 fixed point).
    """

    bits: int
    symmetric: bool = True
    centered: bool = False
    frac_bits: int = 0
    name: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ValueError(f"IntFormat.bits must be in 2..8, got {self.bits}")
        if self.centered and not self.symmetric:
            raise ValueError("IntFormat: centered grids are symmetric; set symmetric=True")
        if not self.name:
            kind = "_centered" if self.centered else ("" if self.symmetric else "_full")
            frac = f"_f{self.frac_bits}" if self.frac_bits else ""
            object.__setattr__(self, "name", f"int{self.bits}{kind}{frac}")

    kind = "int"

    @property
    def qmax(self) -> float:
        half = 2 ** (self.bits - 1)
        return half - 0.5 if self.centered else half - 1

    @property
    def qmin(self) -> float:
        return -self.qmax if self.symmetric else -(2 ** (self.bits - 1))

    @property
    def max_value(self) -> float:
        return math.ldexp(self.qmax, -self.frac_bits)

    @property
    def emax(self) -> int:
        return math.frexp(self.max_value)[1] - 1

    @property
    def man_bits(self) -> int:
        """Bits below the leading one of the largest code (used by the `even` scale rule)."""
        return self.bits - 2

    @property
    def storage_dtype(self):
        if self.centered:
            return jnp.bfloat16  # half-integer codes are exact in bf16
        return jnp.int4 if self.bits <= 4 else jnp.int8

    def describe(self) -> str:
        return self.name


Format = FloatFormat | IntFormat

_NATIVE_FLOAT = {
    (4, 3, "fn", True, True): jnp.float8_e4m3fn,
    (5, 2, "ieee", True, True): jnp.float8_e5m2,
    # XLA has no float6 primitive type (jit fails with "Invalid XLA PrimitiveType F6E2M3FN"), so
    # FP6 codes live in the 8-bit format that contains every FP6 value exactly.
    (2, 3, "none", True, True): jnp.float8_e4m3fn,
    (3, 2, "none", True, True): jnp.float8_e5m2,
    (2, 1, "none", True, True): jnp.float4_e2m1fn,
    (8, 7, "ieee", True, True): jnp.bfloat16,
    (5, 10, "ieee", True, True): jnp.float16,
}

_NATIVE_EXACT = {key: dtype for key, dtype in _NATIVE_FLOAT.items() if key[:3] not in ((2, 3, "none"), (3, 2, "none"))}

FORMATS: dict[str, Format] = {
    "e4m3": FloatFormat(exp_bits=4, man_bits=3, specials="fn", name="e4m3"),
    "e5m2": FloatFormat(exp_bits=5, man_bits=2, specials="ieee", name="e5m2"),
    "e2m3": FloatFormat(exp_bits=2, man_bits=3, name="e2m3"),
    "e3m2": FloatFormat(exp_bits=3, man_bits=2, name="e3m2"),
    "e2m1": FloatFormat(exp_bits=2, man_bits=1, name="e2m1"),
    "bf16": FloatFormat(exp_bits=8, man_bits=7, specials="ieee", name="bf16"),
    "fp16": FloatFormat(exp_bits=5, man_bits=10, specials="ieee", name="fp16"),
    "ue4m3": FloatFormat(exp_bits=4, man_bits=3, specials="fn", signed=False, name="ue4m3"),
    # UE5M3 is a proposed scale format whose specials are unsettled; lowprec takes the OCP "fn"
    # convention (only the all-ones code is NaN), so its largest value is 114688.
    "ue5m3": FloatFormat(exp_bits=5, man_bits=3, specials="fn", signed=False, name="ue5m3"),
    "mxint8": IntFormat(bits=8, frac_bits=6, name="mxint8"),
}
FORMATS.update({f"int{b}": IntFormat(bits=b) for b in range(2, 9)})
FORMATS.update({f"int{b}_full": IntFormat(bits=b, symmetric=False, name=f"int{b}_full") for b in range(2, 9)})
FORMATS.update({f"int{b}_centered": IntFormat(bits=b, centered=True, name=f"int{b}_centered") for b in range(2, 9)})

_GENERIC = re.compile(r"^(u?)e(\d+)m(\d+)(fn|ieee)?(_nosub)?$")


def get_format(fmt: str | Format) -> Format:
    """A format by name ('e4m3', 'int4', 'e3m4', 'e5m2ieee', 'e4m3fn_nosub', ...) or pass-through.

    Generic 'eXmY' names without a suffix have no special values (every code finite).
    """
    if isinstance(fmt, (FloatFormat, IntFormat)):
        return fmt
    if not isinstance(fmt, str):
        raise ValueError(f"format must be a name or a FloatFormat/IntFormat, got {type(fmt).__name__}")
    if fmt in FORMATS:
        return FORMATS[fmt]
    m = _GENERIC.match(fmt)
    if m is None:
        raise ValueError(
            f"unknown number format {fmt!r}; valid names: {', '.join(FORMATS)}, "
            "or generic 'e<E>m<M>[fn|ieee][_nosub]' with E in 1..8 and M in 0..10"
        )
    unsigned, e, mbits, specials, nosub = m.groups()
    return FloatFormat(
        exp_bits=int(e), man_bits=int(mbits), specials=specials or "none",
        subnormals=not nosub, signed=not unsigned,
    )
