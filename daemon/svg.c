/* metrics.svg: see svg.h. */
#include "svg.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SVG_W       720
#define SVG_PANEL_H 260
#define SVG_TOP     48 /* room for the title */
#define SVG_ML      80 /* plot margins inside a panel */
#define SVG_MR      180
#define SVG_MT      36
#define SVG_MB      52

static const char *const svg_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                         "#9467bd", "#8c564b", "#e377c2", "#17becf"};

struct svg_pt {
	double x, y;
};

static void svg_text(struct buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			buf_puts(b, "&lt;");
			break;
		case '>':
			buf_puts(b, "&gt;");
			break;
		case '&':
			buf_puts(b, "&amp;");
			break;
		case '"':
			buf_puts(b, "&quot;");
			break;
		default:
			if ((unsigned char)*s >= 0x20 || *s == '\t')
				buf_append(b, s, 1);
		}
	}
}

/* A tick step of 1, 2 or 5 times a power of ten giving about n intervals. */
static double svg_step(double range, int n)
{
	double raw = range / n, mag = pow(10, floor(log10(raw))), f = raw / mag;

	return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void svg_fmt(char *out, size_t n, double v, double step)
{
	int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);

	if (dec > 8)
		dec = 8;
	if (fabs(v) < step * 1e-9)
		v = 0;
	snprintf(out, n, "%.*f", dec, v);
}

static int svg_pt_cmp(const void *a, const void *b)
{
	const struct svg_pt *x = a, *y = b;

	return (x->x > y->x) - (x->x < y->x);
}

static void svg_panel(struct buf *b, const char *name, const char *color, struct svg_pt *p,
                      size_t n, int top)
{
	double xmin = p[0].x, xmax = p[n - 1].x, ymin = p[0].y, ymax = p[0].y;
	double pw = SVG_W - SVG_ML - SVG_MR, ph = SVG_PANEL_H - SVG_MT - SVG_MB, xs, ys, v;
	int x0 = SVG_ML, y0 = top + SVG_MT;
	char t[64];

	for (size_t i = 1; i < n; i++) {
		ymin = p[i].y < ymin ? p[i].y : ymin;
		ymax = p[i].y > ymax ? p[i].y : ymax;
	}
	if (xmax - xmin < 1) {
		xmin -= 0.5;
		xmax += 0.5;
	}
	if (ymax - ymin < 1e-12) {
		double pad = fabs(ymax) > 1e-12 ? fabs(ymax) * 0.1 : 1;

		ymin -= pad;
		ymax += pad;
	}
	ys = svg_step(ymax - ymin, 5);
	ymin = floor(ymin / ys) * ys;
	ymax = ceil(ymax / ys) * ys;
	xs = svg_step(xmax - xmin, 8);
	if (xs < 1)
		xs = 1;
#define PX(x) (x0 + ((x)-xmin) / (xmax - xmin) * pw)
#define PY(y) (y0 + ph - ((y)-ymin) / (ymax - ymin) * ph)
	buf_printf(b, "<g class=\"chart\" id=\"chart-");
	svg_text(b, name);
	buf_printf(b, "\">\n<text x=\"%d\" y=\"%d\" class=\"title\">", x0, top + 22);
	svg_text(b, name);
	buf_puts(b, " per epoch</text>\n");
	/* grid and y ticks */
	for (v = ymin; v <= ymax + ys / 2; v += ys) {
		svg_fmt(t, sizeof(t), v, ys);
		buf_printf(b,
		           "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
		           "<text x=\"%d\" y=\"%.1f\" class=\"ytick\">%s</text>\n",
		           x0, PY(v), x0 + pw, PY(v), x0 - 8, PY(v) + 4, t);
	}
	for (v = ceil(xmin / xs) * xs; v <= xmax + 1e-9; v += xs) {
		svg_fmt(t, sizeof(t), v, xs);
		buf_printf(b,
		           "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>"
		           "<text x=\"%.1f\" y=\"%.1f\" class=\"xtick\">%s</text>\n",
		           PX(v), y0 + ph, PX(v), y0 + ph + 5, PX(v), y0 + ph + 20, t);
	}
	buf_printf(b,
	           "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.1f\" class=\"axis\"/>"
	           "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>\n",
	           x0, y0, x0, y0 + ph, x0, y0 + ph, x0 + pw, y0 + ph);
	buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"xlabel\">epoch</text>\n", x0 + pw / 2,
	           y0 + ph + 40);
	buf_printf(b,
	           "<text x=\"%d\" y=\"%.1f\" class=\"ylabel\" transform=\"rotate(-90 %d %.1f)\">",
	           x0 - 58, y0 + ph / 2, x0 - 58, y0 + ph / 2);
	svg_text(b, name);
	buf_puts(b, "</text>\n");
	/* the series */
	buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
	for (size_t i = 0; i < n; i++)
		buf_printf(b, "%s%.1f,%.1f", i ? " " : "", PX(p[i].x), PY(p[i].y));
	buf_puts(b, "\"/>\n");
	if (n <= 200)
		for (size_t i = 0; i < n; i++)
			buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>",
			           PX(p[i].x), PY(p[i].y), color);
	/* legend: swatch, name, last value */
	snprintf(t, sizeof(t), "%.6g", p[n - 1].y);
	buf_printf(b,
	           "\n<g class=\"legend\"><rect x=\"%.1f\" y=\"%d\" width=\"14\" height=\"14\" "
	           "fill=\"%s\"/><text x=\"%.1f\" y=\"%d\">",
	           x0 + pw + 20, y0 + 4, color, x0 + pw + 40, y0 + 16);
	svg_text(b, name);
	buf_printf(b,
	           "</text><text x=\"%.1f\" y=\"%d\" class=\"small\">last: %s (epoch %g)</text>"
	           "</g>\n</g>\n",
	           x0 + pw + 40, y0 + 34, t, p[n - 1].x);
#undef PX
#undef PY
}

int svg_metrics(const json_t *metrics, const char *title, struct buf *out)
{
	const char *names[SVG_METRICS_MAX];
	size_t nn = 0, omitted = 0, i, k;
	json_t *rec, *v;
	const char *key;
	int height;

	json_array_foreach(metrics, i, rec)
	{
		if (!json_is_number(json_object_get(rec, "epoch")))
			continue;
		json_object_foreach((json_t *)rec, key, v)
		{
			bool seen = false;

			if (!strcmp(key, "epoch") || !json_is_number(v))
				continue;
			for (k = 0; k < nn; k++)
				seen |= !strcmp(names[k], key);
			if (seen)
				continue;
			if (nn < SVG_METRICS_MAX)
				names[nn++] = key;
			else
				omitted++;
		}
	}
	height = SVG_TOP + (int)(nn ? nn : 1) * SVG_PANEL_H;
	buf_printf(out,
	           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	           "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	           "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, "
	           "sans-serif\" font-size=\"13\">\n"
	           "<style>.grid{stroke:#e5e5e5}.axis{stroke:#333}.title{font-size:15px;"
	           "font-weight:bold}.ytick{text-anchor:end}.xtick{text-anchor:middle}"
	           ".xlabel,.ylabel{text-anchor:middle;fill:#333}.small{font-size:11px;"
	           "fill:#555}</style>\n"
	           "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
	           "<text x=\"%d\" y=\"28\" font-size=\"18\" font-weight=\"bold\">",
	           SVG_W, height, SVG_W, height, SVG_ML);
	svg_text(out, title && *title ? title : "metrics");
	buf_puts(out, "</text>\n");
	if (nn == 0)
		buf_printf(
		    out, "<text x=\"%d\" y=\"%d\" class=\"small\">no metrics reported yet</text>\n",
		    SVG_ML, SVG_TOP + 40);
	for (k = 0; k < nn; k++) {
		struct svg_pt *p = calloc(json_array_size(metrics) + 1, sizeof(*p));
		size_t n = 0;

		if (!p)
			return -ENOMEM;
		json_array_foreach(metrics, i, rec)
		{
			json_t *e = json_object_get(rec, "epoch"),
			       *y = json_object_get(rec, names[k]);

			if (n >= SVG_POINTS_MAX || !json_is_number(e) || !json_is_number(y) ||
			    !isfinite(json_number_value(y)))
				continue;
			p[n].x = json_number_value(e);
			p[n].y = json_number_value(y);
			n++;
		}
		if (n) {
			qsort(p, n, sizeof(*p), svg_pt_cmp);
			svg_panel(out, names[k],
			          svg_colors[k % (sizeof(svg_colors) / sizeof(svg_colors[0]))], p,
			          n, SVG_TOP + (int)k * SVG_PANEL_H);
		}
		free(p);
	}
	if (omitted)
		buf_printf(
		    out,
		    "<text x=\"%d\" y=\"%d\" class=\"small\">%zu more metrics not drawn</text>\n",
		    SVG_ML, height - 8, omitted);
	return buf_puts(out, "</svg>\n");
}
