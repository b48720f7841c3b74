# SPDX-License-Identifier: MIT
# bench/plot.gp: the benchmark's plot, bench.png and bench.svg, from
# bench-plot.dat in the current directory (conc-bench runs gnuplot inside its
# output directory and passes ncont, the number of contenders, with -e).
# Three panels of grouped bars, one bar per contender, each labelled with its
# value, on log scales since the contenders differ by orders of magnitude:
# throughput (higher is better), latency and idle CPU time (lower is better).
#
# By hand:  cd bench/out && gnuplot -e 'ncont=3' ../plot.gp

if (!exists("ncont")) ncont = 3
datafile = 'bench-plot.dat'
set encoding utf8

set style data histograms
# Every data block opens with a line of column names.
set key autotitle columnheader
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9 relative
set logscale y
set grid ytics lc rgb '#dddddd'
set key outside bottom center horizontal noenhanced
set xtics nomirror scale 0 noenhanced
set ytics nomirror
set border 3
set offsets 0, 0, graph 0.08, 0
# conc, mutex, ck_ring
array colour[3] = ['#1b6ac9', '#d95f02', '#7570b3']

# The centre of contender i's bar (data column i + 1) in a cluster of ncont
# bars, with the gap of one bar width set above.
barx(i) = $0 + (i - 2 - (ncont - 1) / 2.0) / (ncont + 1)
# About three significant digits; big values with an SI prefix (16.8M).
label(v) = v != v ? '' : v >= 10000 ? gprintf('%.1s%c', v) : v >= 100 ? sprintf('%.0f', v) : \
           v >= 10 ? sprintf('%.1f', v) : v >= 1 ? sprintf('%.2f', v) : sprintf('%.3g', v)

# pngcairo draws better than png; use it where this gnuplot has it.
pngterm = strstrt(GPVAL_TERMINALS, 'pngcairo') > 0 ? 'pngcairo' : 'png'

do for [fmt in 'png svg'] {
    if (fmt eq 'png') {
        set terminal @pngterm size 1500,560 noenhanced font ',10'
        set output 'bench.png'
    } else {
        set terminal svg size 1500,560 dynamic noenhanced font 'sans,10'
        set output 'bench.svg'
    }
    set multiplot layout 1,3 title 'conc benchmark: medians, see bench.md for the table'

    set title 'throughput (higher is better)'
    set ylabel 'Mops/s'
    set format y '%g'
    plot for [i=2:ncont+1] datafile index 0 using i:xtic(1) title columnheader(i) lc rgb colour[i-1], \
         for [i=2:ncont+1] datafile index 0 using (barx(i)):i:(label(column(i))) with labels \
             offset 0,0.6 font ',8' notitle

    set title 'latency (lower is better)'
    set ylabel 'ns'
    set format y '%.0s%c'
    plot for [i=2:ncont+1] datafile index 1 using i:xtic(1) title columnheader(i) lc rgb colour[i-1], \
         for [i=2:ncont+1] datafile index 1 using (barx(i)):i:(label(column(i))) with labels \
             offset 0,0.6 font ',8' notitle

    set title 'idle blocked receiver (lower is better)'
    set ylabel 'µs of CPU per second'
    plot for [i=2:ncont+1] datafile index 2 using i:xtic(1) title columnheader(i) lc rgb colour[i-1], \
         for [i=2:ncont+1] datafile index 2 using (barx(i)):i:(label(column(i))) with labels \
             offset 0,0.6 font ',8' notitle

    unset multiplot
    unset output
}
