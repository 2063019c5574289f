"""Every architecture and variant that whole-network tests run over, by a readable id."""

from lenet5.arch import LENET5_1998, MODERN_ACTIVATIONS, POOLS, get_arch

VARIANTS = {f"lenet5-{pool}-{activation}": get_arch("lenet5", pool, activation)
            for pool in POOLS for activation in MODERN_ACTIVATIONS}
EVERY_ARCH = {**VARIANTS, LENET5_1998.name: LENET5_1998}
