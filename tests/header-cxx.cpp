// conc.h compiles as C++ and its typed wrappers work there.
#include "conc.h"

CONC_CHAN_TYPED(intchan, int)

int main()
{
	struct intchan *c = nullptr;
	if (intchan_new(&c, 4) != CONC_OK)
		return 1;
	int v = 0;
	if (intchan_send(c, 7) != CONC_OK || intchan_recv(c, &v) != CONC_OK || v != 7)
		return 1;
	return intchan_free(c) == CONC_OK ? 0 : 1;
}
