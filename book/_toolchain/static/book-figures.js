/* Responsive plotly figures for the fedlib book (loaded right after plotly.js on every page that
 * draws figures; see book/_toolchain/fedlib_book.py).
 *
 * The executed notebooks store each figure as `Plotly.newPlot(id, data, layout, config)`. This
 * script wraps Plotly.newPlot so that, without touching the notebooks, every figure
 *   - follows the width of the page column (config.responsive); a figure built with a fixed
 *     `layout.width` keeps it as its largest width and keeps its aspect ratio below it;
 *   - shows plotly's toolbar only on hover, in a strip above the title and subplot titles so
 *     that it never covers them (on phones the toolbar is off: touch has no hover);
 *   - wraps the title, subplot titles and axis titles that are wider than their room onto
 *     several lines (text measured with the figure's font);
 *   - on phones: puts a heatmap's colour bar under the plot, and shortens long category labels
 *     in the middle ("HAM_vidir_m…ISIC-2019"; the hover text keeps the full label);
 *   - keeps the numbers written in heatmap cells inside their cells, and hides them (they stay
 *     in the hover text) when even 8 px type does not fit;
 *   - for a gallery (fedlib.viz.image_gallery_figure, `layout.meta.gallery`) shrinks the image
 *     titles with the images, and hides them when they would overlap (hover shows them).
 * The layout is chosen for the width of the column when the page loads; the last two steps run
 * again after each redraw (e.g. a resized window).
 */
(function () {
  "use strict";
  if (!window.Plotly || window.Plotly.__bookWrapped) {
    return;
  }
  var Plotly = window.Plotly;
  var newPlot = Plotly.newPlot;
  var PHONE_MAX_WIDTH = 600;
  var TOOLBAR_STRIP = 34; // px at the top of a figure where plotly's toolbar appears on hover
  var MIN_FONT = 8;
  var DEFAULT_FAMILY = '"Open Sans", verdana, arial, sans-serif';
  var canvas = document.createElement("canvas").getContext("2d");

  function plain(text) {
    return String(text).replace(/<br\s*\/?>/gi, "\n").replace(/<[^>]+>/g, "");
  }

  function textWidth(text, size, family) {
    canvas.font = size + "px " + (family || DEFAULT_FAMILY);
    return Math.max.apply(null, plain(text).split("\n").map(function (line) {
      return canvas.measureText(line).width;
    }));
  }

  /* Break `text` at spaces (existing <br> kept) so that no line is wider than `maxWidth`. */
  function wrapText(text, maxWidth, size, family) {
    return String(text).split(/<br\s*\/?>/i).map(function (line) {
      var words = line.split(" ");
      var lines = [];
      var current = "";
      words.forEach(function (word) {
        var candidate = current ? current + " " + word : word;
        if (current && textWidth(candidate, size, family) > maxWidth) {
          lines.push(current);
          current = word;
        } else {
          current = candidate;
        }
      });
      lines.push(current);
      return lines.join("<br>");
    }).join("<br>");
  }

  function lineCount(text) {
    return String(text).split(/<br\s*\/?>/i).length;
  }

  /* "HAM_vidir_molemax · ISIC-2019" -> "HAM_vid…ISIC-2019", at most `maxWidth` px. */
  function shorten(label, maxWidth, size, family) {
    label = String(label);
    if (textWidth(label, size, family) <= maxWidth) {
      return label;
    }
    var tail = Math.ceil(label.length / 2);
    var head = label.length - tail;
    while (head + tail > 2) {
      if (head >= tail) {
        head--;
      } else {
        tail--;
      }
      var candidate = label.slice(0, head) + "…" + label.slice(label.length - tail);
      if (textWidth(candidate, size, family) <= maxWidth) {
        return candidate;
      }
    }
    return label.slice(0, 1) + "…";
  }

  function containerWidth(div) {
    var node = div;
    while (node && node.clientWidth === 0) {
      node = node.parentElement;
    }
    return node ? node.clientWidth : window.innerWidth;
  }

  function copy(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  function titleOf(value) {
    if (!value) {
      return null;
    }
    return typeof value === "string" ? {text: value} : Object.assign({}, value);
  }

  function fontSize(font, fallback) {
    return font && typeof font.size === "number" ? font.size : fallback;
  }

  function axisKeys(layout, letter) {
    var keys = Object.keys(layout).filter(function (key) {
      return new RegExp("^" + letter + "axis\\d*$").test(key);
    });
    return keys.length ? keys : [letter + "axis"];
  }

  /* The figure as it will be drawn at `width` px, from the notebook's layout and config. */
  function prepare(div, data, original, config, width) {
    var layout = copy(original) || {};
    config = Object.assign({}, config || {});
    var phone = width <= PHONE_MAX_WIDTH;
    var family = (layout.font && layout.font.family) || DEFAULT_FAMILY;
    if (phone && fontSize(layout.font, 12) > 11) {
      layout.font = Object.assign({}, layout.font || {}, {size: 11});
    }
    var baseSize = fontSize(layout.font, 12);
    config.responsive = true;
    config.displaylogo = false;
    config.displayModeBar = phone ? false : "hover";

    // a fixed width becomes the largest width; the height follows the width below it
    if (layout.width) {
      var fixedWidth = layout.width;
      var aspect = (layout.height || 450) / fixedWidth;
      div.style.maxWidth = fixedWidth + "px";
      delete layout.width;
      if (width < fixedWidth) {
        layout.height = Math.max(160, Math.round(width * aspect));
      }
      width = Math.min(width, fixedWidth);
    }
    var height = layout.height || 450;
    var margin = Object.assign({l: 80, r: 80, t: 100, b: 80}, layout.margin || {});
    var strip = config.displayModeBar === false ? 4 : TOOLBAR_STRIP;

    // phones: a heatmap's colour bar and the legend under the plot, not beside it
    var bottom = 0;
    var bars = [];
    if (phone) {
      data.forEach(function (trace) {
        if (trace.type === "heatmap" && trace.showscale !== false) {
          trace.colorbar = Object.assign({}, trace.colorbar || {}, {
            orientation: "h", x: 0.5, xanchor: "center", yanchor: "bottom", yref: "paper",
            thickness: 10, len: 0.9, ypad: 0,
            title: Object.assign({}, titleOf((trace.colorbar || {}).title) || {}, {side: "top"}),
          });
          bars.push(trace.colorbar);
          bottom = 72;
          margin.r = Math.min(margin.r, 10);
        }
      });
      var legendFont = fontSize((layout.legend || {}).font, baseSize);
      var named = data.filter(function (trace) {
        return trace.showlegend !== false && trace.name !== undefined && trace.name !== "";
      });
      if (layout.showlegend !== false && (named.length > 1 || layout.showlegend === true)) {
        var rows = 1;
        var used = 0;
        named.forEach(function (trace) {
          var item = textWidth(trace.name, legendFont, family) + 44;
          if (used && used + item > width - 16) {
            rows++;
            used = 0;
          }
          used += item;
        });
        var legendHeight = rows * (legendFont + 8) + 10;
        layout.legend = Object.assign({}, layout.legend || {}, {
          orientation: "h", x: 0, xanchor: "left", xref: "container",
          y: (bottom + 4) / (layout.height || 450), yanchor: "bottom", yref: "container",
        });
        var legendTitle = titleOf(layout.legend.title);
        if (legendTitle && legendTitle.text) {  // above the items, not beside them
          legendTitle.side = "top";
          layout.legend.title = legendTitle;
          legendHeight += lineCount(legendTitle.text) * (legendFont + 6);
        }
        bottom += legendHeight;
        margin.r = Math.min(margin.r, 10);
      }
      margin.b = Math.max(margin.b, 40) + bottom;
    }
    var plotWidth = Math.max(60, width - margin.l - margin.r);

    // phones: long category labels shortened in the middle
    if (phone) {
      ["x", "y"].forEach(function (letter) {
        axisKeys(layout, letter).forEach(function (key) {
          var axis = layout[key] = Object.assign({}, layout[key] || {});
          if (axis.ticktext || axis.visible === false) {
            return;
          }
          var values = [];
          data.forEach(function (trace) {
            var refKey = (trace[letter + "axis"] || letter).replace(letter, letter + "axis");
            var column = trace[letter];
            if (refKey === key && Array.isArray(column)) {
              column.forEach(function (v) {
                if (typeof v === "string" && values.indexOf(v) < 0) {
                  values.push(v);
                }
              });
            }
          });
          if (!values.length) {
            return;
          }
          var size = fontSize(axis.tickfont, baseSize);
          var room = letter === "y" ? width * 0.3 : Math.max(40, plotWidth / values.length);
          var short = values.map(function (v) {
            return shorten(v, letter === "y" ? room : Math.max(room, width * 0.3), size, family);
          });
          if (short.some(function (s, i) { return s !== values[i]; })) {
            axis.tickvals = values;
            axis.ticktext = short;
          }
        });
      });
    }

    // axis titles wrapped to their axis' length
    ["x", "y"].forEach(function (letter) {
      axisKeys(layout, letter).forEach(function (key) {
        var axis = layout[key] = Object.assign({}, layout[key] || {});
        var title = titleOf(axis.title);
        if (!title || !title.text) {
          return;
        }
        var domain = axis.domain || [0, 1];
        var room = (letter === "x" ? plotWidth : height - margin.t - margin.b)
          * (domain[1] - domain[0]);
        var size = fontSize(title.font, baseSize * 14 / 12);
        var wrapped = wrapText(title.text, Math.max(40, room - 4), size, family);
        if (wrapped !== title.text) {
          title.text = wrapped;
          axis.title = title;
          axis.automargin = true;
        }
      });
    });

    // subplot titles (annotations above a subplot) wrapped to their subplot's width
    var topTexts = 0;
    (layout.annotations || []).forEach(function (annotation, i) {
      if (!annotation || !annotation.text || annotation.xref !== "paper") {
        return;
      }
      annotation = layout.annotations[i] = Object.assign({}, annotation);
      var size = fontSize(annotation.font, baseSize * 16 / 12);
      var columns = {};
      axisKeys(layout, "x").forEach(function (key) {
        var domain = (layout[key] || {}).domain || [0, 1];
        columns[domain[0].toFixed(3)] = domain[1] - domain[0];
      });
      var share = Math.min.apply(null, Object.keys(columns).map(function (k) {
        return columns[k];
      }));
      var wrapped = wrapText(annotation.text, Math.max(40, plotWidth * share - 4), size, family);
      if (wrapped !== annotation.text) {
        annotation.text = wrapped;
      }
      if (annotation.yref === "paper" && annotation.y >= 0.98) {
        topTexts = Math.max(topTexts, lineCount(annotation.text) * size * 1.35 + 8);
      }
    });

    // the figure title wrapped to the width, below the toolbar's strip
    var title = titleOf(layout.title);
    var titleHeight = 0;
    if (title && title.text) {
      var size = fontSize(title.font, baseSize * 17 / 12);
      title.text = wrapText(title.text, width - 24, size, family);
      titleHeight = lineCount(title.text) * size * 1.3;
      // centred in a band under the strip (plotly places a multi-line title correctly about
      // its middle, not about its top or bottom)
      title.yref = "container";
      title.yanchor = "middle";
      title.y = 1 - (strip + titleHeight / 2 + 2) / height;
      if (title.x === undefined) {
        title.xref = "container";
        title.x = 0.01;
        title.xanchor = "left";
      }
      layout.title = title;
    }
    var needed = Math.ceil(strip + titleHeight + topTexts + (titleHeight ? 16 : 0));
    if (margin.t < needed) {
      margin.t = needed;
    }
    layout.margin = margin;
    // colour bars at the bottom of the figure, in plot-area fractions now the margins are known
    bars.forEach(function (bar) {
      bar.y = -(margin.b - 4) / Math.max(40, height - margin.t - margin.b);
    });
    return {layout: layout, config: config};
  }

  /* After drawing: heatmap numbers and gallery titles sized to the cells actually drawn. */
  function adapt(gd) {
    var full = gd._fullLayout;
    var restyles = [];
    var relayout = {};
    (gd._fullData || []).forEach(function (trace, i) {
      if (trace.type !== "heatmap" || !trace.z || !trace.z.length) {
        return;
      }
      var original = gd.__bookOriginalData[i] || {};
      if (!original.texttemplate && !original.text) {
        return;
      }
      var labels = [].slice.call(gd.querySelectorAll("g.heatmaplayer text"));
      if (!labels.length || trace.texttemplate === "") {
        return;
      }
      var drawn = Math.min.apply(null, labels.map(function (label) {
        return parseFloat(window.getComputedStyle(label).fontSize) || 12;
      }));
      var wanted = fontSize(original.textfont, null);
      if (wanted === null) {
        // plotly sized the numbers to the cells itself ("auto"): keep them unless too small
        if (drawn < MIN_FONT) {
          restyles.push([{texttemplate: ""}, [i]]);
        }
        return;
      }
      var xa = full[trace.xaxis.replace("x", "xaxis")];
      var ya = full[trace.yaxis.replace("y", "yaxis")];
      var cellWidth = xa._length / Math.max(1, trace.z[0].length);
      var cellHeight = ya._length / trace.z.length;
      var family = (trace.textfont && trace.textfont.family) || DEFAULT_FAMILY;
      var widest = 1;
      labels.forEach(function (label) {
        widest = Math.max(widest, textWidth(label.textContent || "", 10, family) / 10);
      });
      var size = Math.floor(Math.min(wanted, (cellWidth - 4) / widest, cellHeight - 2));
      if (size < MIN_FONT) {
        restyles.push([{texttemplate: ""}, [i]]);
      } else if (size !== drawn) {
        restyles.push([{"textfont.size": size}, [i]]);
      }
    });
    // subplot titles still wider than their subplot as drawn: wrapped to its width
    var nodes = gd.querySelectorAll("g.annotation");
    (full.annotations || []).forEach(function (annotation, i) {
      if (annotation.xref !== "paper" || annotation.yref !== "paper" || annotation.y < 0.98
          || !nodes[i] || annotation.visible === false) {
        return;
      }
      var axis = null;
      axisKeys(full, "x").forEach(function (key) {
        var candidate = full[key];
        if (candidate && candidate.domain && candidate.domain[0] <= annotation.x
            && annotation.x <= candidate.domain[1]) {
          axis = candidate;
        }
      });
      var drawnWidth = nodes[i].getBoundingClientRect().width;
      if (axis && drawnWidth > axis._length + 2) {
        var size = fontSize(annotation.font, 12);
        var family = (annotation.font && annotation.font.family) || DEFAULT_FAMILY;
        var wrapped = wrapText(annotation.text.replace(/<br\s*\/?>/gi, " "), axis._length - 2,
                               size, family);
        if (wrapped !== annotation.text) {
          relayout["annotations[" + i + "].text"] = wrapped;
        } else if (size > MIN_FONT + 2) {
          relayout["annotations[" + i + "].font.size"] = size - 2;
        }
      }
    });
    var gallery = full.meta && full.meta.gallery;
    if (gallery && full.annotations && full.annotations.length) {
      var xa = full.xaxis;
      var scale = xa._length / (xa.range[1] - xa.range[0]); // px per mosaic pixel
      var tileWidth = gallery.tile[1] * scale + gallery.gap * scale;
      var bandHeight = gallery.band * scale;
      var family = (full.font && full.font.family) || DEFAULT_FAMILY;
      var widest = 1;
      gd.__bookOriginalLayout.annotations.forEach(function (a) {
        widest = Math.max(widest, textWidth(a.text, 10, family) / 10);
      });
      var wantedSize = fontSize(gd.__bookOriginalLayout.annotations[0].font, 11);
      var size = Math.floor(Math.min(wantedSize, (tileWidth - 3) / widest, bandHeight - 1));
      var show = size >= MIN_FONT;
      full.annotations.forEach(function (a, i) {
        if (a.visible !== show) {
          relayout["annotations[" + i + "].visible"] = show;
        }
        if (show && a.font.size !== size) {
          relayout["annotations[" + i + "].font.size"] = size;
        }
      });
    }
    var steps = restyles.map(function (r) {
      return function () { return Plotly.restyle(gd, r[0], r[1]); };
    });
    if (Object.keys(relayout).length) {
      steps.push(function () { return Plotly.relayout(gd, relayout); });
    }
    return steps.reduce(function (chain, step) {
      return chain.then(step);
    }, Promise.resolve());
  }

  function redraw(gd) {
    if (gd.__bookBusy) {
      return;
    }
    gd.__bookBusy = true;
    var done = function () {
      gd.__bookBusy = false;
    };
    adapt(gd).then(done, done);
  }

  Plotly.newPlot = function (gd, data, layout, config) {
    var div = typeof gd === "string" ? document.getElementById(gd) : gd;
    if (!div || !Array.isArray(data)) {
      return newPlot.apply(this, arguments);
    }
    var width = containerWidth(div.parentElement || div);
    var originalData = copy(data);
    var originalLayout = copy(layout) || {};
    var prepared;
    try {
      prepared = prepare(div, data, originalLayout, config, width);
    } catch (error) {
      prepared = {layout: layout, config: config};
    }
    var outer = div.parentElement;
    if (outer && outer.style && outer.style.height && prepared.layout.height) {
      outer.style.height = prepared.layout.height + "px";
    }
    return newPlot.call(this, div, data, prepared.layout, prepared.config).then(function (plot) {
      plot.__bookOriginalData = originalData;
      plot.__bookOriginalLayout = originalLayout;
      plot.__bookWidth = width;
      redraw(plot);
      plot.on("plotly_relayout", function () {
        window.requestAnimationFrame(function () {
          redraw(plot);
        });
      });
      return plot;
    });
  };
  Plotly.__bookWrapped = true;
})();
