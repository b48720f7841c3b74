# SPDX-License-Identifier: MIT
# bench/plot.gp: the benchmark's plot, bench.png and bench.svg, from
# bench-plot.dat in the current directory (conc-bench runs gnuplot inside its
# output directory and passes, with -e, ncont, the number of contenders, and
# cols, see below).
# Six panels of grouped bars, one bar per contender, each labelled with its
# value, on log scales since the contenders differ by orders of magnitude:
# channel throughput and select throughput (higher is better), then round
# trips and latency, and idle CPU time (lower is better), then the pattern
# layers: pool, contended semaphore, pipeline, and the resilience layers:
# limiter, breaker, publish (higher is better).  A contender
# without a row's feature (ck_ring: select, rendezvous) has no bar there.
#
# By hand:  cd bench/out && gnuplot -e 'ncont=3' ../plot.gp

datafile = 'bench-plot.dat'
if (!exists("ncont")) ncont = 3
# cols[p]: the data columns with at least one value in panel p, as a list of
# words (' 2 3'): gnuplot cannot draw a histogram series without a valid
# point, so a contender that lacks a panel's feature (ck_ring: select) gets
# no bars there.  By hand it is found with stats, which warns about each
# column it skips.
if (!exists("cols")) {
    array cols[6]
    do for [p=1:6] {
        cols[p] = ''
        do for [i=2:ncont+1] {
            undefine S_*
            stats datafile index p-1 using i name 'S' nooutput
            if (exists("S_records") && S_records > 0) { cols[p] = cols[p].' '.i }
        }
    }
}
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

# The centre of the k-th of n bars in a cluster, with the gap of one bar
# width set above.
barx(k, n) = $0 + (k - 1 - (n - 1) / 2.0) / (n + 1)
# About three significant digits; big values with an SI prefix (16.8M).
label(v) = v != v ? '' : v >= 10000 ? gprintf('%.1s%c', v) : v >= 100 ? sprintf('%.0f', v) : \
           v >= 10 ? sprintf('%.1f', v) : v >= 1 ? sprintf('%.2f', v) : sprintf('%.3g', v)

# The panels, in the order of conc-bench's data blocks.
array ptitle[6] = ['channel throughput (higher is better)', \
                   'select over K channels, K producers, 1 consumer (higher is better)', \
                   'round trips, latency, semaphore (lower is better)', \
                   'idle blocked receiver (lower is better)', \
                   'worker pool, semaphore, pipeline (higher is better)', \
                   'rate limiter, circuit breaker, pub/sub (higher is better)']
array pylabel[6] = ['Mops/s', 'Mops/s', 'ns', 'µs of CPU per second', 'M per second', 'M per second']
array pformat[6] = ['%g', '%g', '%.0s%c', '%.0s%c', '%g', '%g']

# pngcairo draws better than png; use it where this gnuplot has it.
pngterm = strstrt(GPVAL_TERMINALS, 'pngcairo') > 0 ? 'pngcairo' : 'png'

do for [fmt in 'png svg'] {
    if (fmt eq 'png') {
        set terminal @pngterm size 2100,1000 noenhanced font ',10'
        set output 'bench.png'
    } else {
        set terminal svg size 2100,1000 dynamic noenhanced font 'sans,10'
        set output 'bench.svg'
    }
    set multiplot layout 2,3 title 'conc benchmark: medians, see bench.md for the table'
    do for [p=1:6] {
        set title ptitle[p]
        set ylabel pylabel[p]
        set format y pformat[p]
        n = words(cols[p])
        if (n == 0) {
            set multiplot next
        } else {
            plot for [k=1:n] datafile index p-1 using (column(int(word(cols[p], k)))):xtic(1) \
                     title columnheader(int(word(cols[p], k))) lc rgb colour[int(word(cols[p], k)) - 1], \
                 for [k=1:n] datafile index p-1 \
                     using (barx(k, n)):(column(int(word(cols[p], k)))):(label(column(int(word(cols[p], k))))) \
                     with labels offset 0,0.6 font ',8' notitle
        }
    }
    unset multiplot
    unset output
}
