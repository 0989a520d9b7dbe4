/* metrics.svg: one chart per metric, points sorted by epoch, text escaped, empty input.
 * With REEF_SVG_OUT set, writes the chart there for a look (rsvg-convert it). */
#include <errno.h>
#include <string.h>

#include "../check.h"
#include "svg.h"

static size_t count(const char *s, const char *needle)
{
	size_t n = 0;

	for (; (s = strstr(s, needle)); s++)
		n++;
	return n;
}

int main(void)
{
	json_t *m = json_loads("[{\"epoch\":3,\"loss\":0.4,\"accuracy\":0.9},"
	                       "{\"epoch\":1,\"loss\":0.9,\"accuracy\":0.6},"
	                       "{\"epoch\":2,\"loss\":0.6,\"accuracy\":0.8,\"a<b&c\":1},"
	                       "{\"loss\":5},{\"epoch\":4,\"loss\":\"x\",\"accuracy\":0.95}]",
	                       0, NULL);
	struct buf b = BUF_INIT(1 << 20);
	const char *out = getenv("REEF_SVG_OUT");

	CHECK(m);
	CHECK_EQ_INT(svg_metrics(m, "experiment <exp1>", &b), 0);
	CHECK(strncmp(b.data, "<?xml", 5) == 0);
	CHECK(strstr(b.data, "</svg>\n"));
	CHECK_EQ_INT(count(b.data, "<polyline"), 3);
	CHECK(strstr(b.data, "id=\"chart-loss\""));
	CHECK(strstr(b.data, "id=\"chart-accuracy\""));
	CHECK(strstr(b.data, "chart-a&lt;b&amp;c"));
	CHECK(strstr(b.data, "experiment &lt;exp1&gt;"));
	CHECK(!strstr(b.data, "<exp1>"));
	CHECK_EQ_INT(count(b.data, ">epoch</text>"), 3);
	CHECK(strstr(b.data, "last: 0.95 (epoch 4)"));
	/* loss: epochs 1..3 in order (the record with a string loss is skipped) */
	{
		const char *p = strstr(strstr(b.data, "id=\"chart-loss\""), "points=\"");
		double x1, y1, x2, y2, x3, y3;

		CHECK(sscanf(p, "points=\"%lf,%lf %lf,%lf %lf,%lf\"", &x1, &y1, &x2, &y2, &x3,
		             &y3) == 6);
		CHECK(x1 < x2 && x2 < x3);
		CHECK(y1 < y2 && y2 < y3); /* loss falls: y grows downwards */
	}
	if (out) {
		FILE *f = fopen(out, "w");

		CHECK(f && fwrite(b.data, 1, b.len, f) == b.len);
		fclose(f);
	}
	buf_reset(&b);
	CHECK_EQ_INT(svg_metrics(NULL, NULL, &b), 0);
	CHECK(strstr(b.data, "no metrics reported yet"));
	buf_free(&b);
	/* a cap too small is an error, not a truncated document */
	{
		struct buf small = BUF_INIT(200);

		CHECK_EQ_INT(svg_metrics(m, "t", &small), -EFBIG);
		buf_free(&small);
	}
	json_decref(m);
	return 0;
}
