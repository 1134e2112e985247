/* Replaces the theme's scripts/fontawesome.js (Font Awesome's SVG-with-JavaScript build,
   1.5 MB, about 0.54 MB gzipped, loaded on every page). The theme's stylesheet already renders
   every icon from Font Awesome's webfonts, so the book needs no script for them; this file is
   served under the same name so that the theme's <script> tag finds something small.
   See book/_toolchain/SOURCES.txt. */
