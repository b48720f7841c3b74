/* conc.h in a program that uses channels but no pub/sub: it must compile
 * and link without liburcu, whether or not conc.h included conc/pubsub.h. */
#include "conc.h"

int main(void)
{
	struct conc_chan *c = NULL;
	int v = 7, w = 0;
	if (conc_chan_new(&c, 1, sizeof v) != CONC_OK)
		return 1;
	if (conc_chan_send(c, &v) != CONC_OK || conc_chan_recv(c, &w) != CONC_OK || w != 7)
		return 1;
	return conc_chan_free(c) == CONC_OK ? 0 : 1;
}
