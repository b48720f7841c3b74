/* SPDX-License-Identifier: MIT */
/* Placeholder: the select stress program is being written. */
#include "conc.h"
int main(void) { return 0; }
