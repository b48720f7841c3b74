#include "conc.h"
int main(void) { return 0; }
