/* SPDX-License-Identifier: MIT */
/* Placeholder: the ported Go channel/select suite is being written. */
#include "conc.h"
#include <criterion/criterion.h>
Test(select, placeholder) { cr_assert(1); }
