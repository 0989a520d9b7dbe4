/* metrics.svg (daemon/svg.c): an experiment's per-epoch metrics drawn as SVG, one line
 * chart per metric (stacked), each with its axes, ticks, axis labels, a title and a
 * legend giving the last value. Pure: no I/O. */
#ifndef REEF_SVG_H
#define REEF_SVG_H

#include <jansson.h>

#include "reef/buf.h"

#define SVG_METRICS_MAX 16    /* charts drawn; more metrics are listed as omitted */
#define SVG_POINTS_MAX  10000 /* epochs drawn per metric */

/* metrics: [{"epoch": n, "<metric>": number, …}, …] in any order; records without a
 * numeric epoch and non-numeric values are skipped. An empty or missing array draws a
 * placeholder saying there are no metrics yet. Returns 0, -ENOMEM or -EFBIG (out's cap). */
int svg_metrics(const json_t *metrics, const char *title, struct buf *out);

#endif
