# Sourced by the parity benchmarks: bench_texts DIR N writes DIR/{eng,san,tam,hin}.txt, N
# lines each (30 to 90 bytes, without format directives, a fixed sample) of real text the
# machine already has: English from the GPL-3 text in /usr/share/common-licenses, Hindi
# and Tamil from the hi and ta message catalogues in /usr/share/locale, and for the
# Sanskrit model Marathi ones (Devanagari; Debian ships no Sanskrit catalogue).
bench_catalogue() { # bench_catalogue LOCALE: every translated message of its catalogues
    for f in /usr/share/locale/"$1"/LC_MESSAGES/*.mo; do
        [ -e "$f" ] && msgunfmt "$f" 2>/dev/null
    done | sed -n 's/^msgstr "\(.*\)"$/\1/p' | grep -v '[%\\_&<>{}$]'
}
bench_texts() {
    local dir=$1 n=$2
    sample() {
        awk 'length($0) >= 30 && length($0) <= 90' | sort -u |
            shuf -n "$n" --random-source=<(yes 42)
    }
    grep -v '^ *$' /usr/share/common-licenses/GPL-3 | sed 's/^ *//' | sample >"$dir/eng.txt"
    bench_catalogue mr | sample >"$dir/san.txt"
    bench_catalogue ta | sample >"$dir/tam.txt"
    bench_catalogue hi | sample >"$dir/hin.txt"
}
