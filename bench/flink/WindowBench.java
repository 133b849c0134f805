// Peer of weir's window benchmark (scripts/bench-windows): the keyed-count generator
// ({"seq":n,"key":"key-k","value":v}, splitmix64, seed 1, 10 000 keys) with event time
// seq ms, keyed by key, counted per one-minute tumbling window or per 10-minute window
// sliding by one minute; each firing emits a JSON string
// {"key":..,"window_start":..,"window_end":..,"count":n}; discarding sink.
//
//   java WindowBench <events> <tumbling|sliding> <hashmap|rocksdb>
import java.time.Duration;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.WindowAssigner;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public class WindowBench {
  static long mix(long x) {
    x += 0x9e3779b97f4a7c15L;
    x = (x ^ (x >>> 30)) * 0xbf58476d1ce4e5b9L;
    x = (x ^ (x >>> 27)) * 0x94d049bb133111ebL;
    return x ^ (x >>> 31);
  }

  static class Count implements AggregateFunction<Tuple3<String, String, Long>, Long, Long> {
    public Long createAccumulator() { return 0L; }
    public Long add(Tuple3<String, String, Long> v, Long a) { return a + 1; }
    public Long getResult(Long a) { return a; }
    public Long merge(Long a, Long b) { return a + b; }
  }

  static class Format extends ProcessWindowFunction<Long, String, String, TimeWindow> {
    @Override public void process(String key, Context ctx, Iterable<Long> counts, Collector<String> out) {
      TimeWindow w = ctx.window();
      out.collect("{\"key\":\"" + key + "\",\"window_start\":" + w.getStart() + ",\"window_end\":" + w.getEnd() + ",\"count\":" + counts.iterator().next() + "}");
    }
  }

  public static void main(String[] args) throws Exception {
    long n = Long.parseLong(args[0]);
    String kind = args[1];
    String backend = args.length > 2 ? args[2] : "hashmap";
    Configuration conf = new Configuration();
    conf.set(StateBackendOptions.STATE_BACKEND, backend);
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(1);
    env.getConfig().enableObjectReuse();
    WindowAssigner<Object, TimeWindow> assigner = kind.equals("sliding")
        ? SlidingEventTimeWindows.of(Duration.ofMinutes(10), Duration.ofMinutes(1))
        : TumblingEventTimeWindows.of(Duration.ofMinutes(1));
    long t0 = System.nanoTime();
    env.fromSequence(0, n - 1)
        .map(seq -> {
          long r = mix(1L ^ (seq * 0x9e3779b97f4a7c15L));
          String key = "key-" + Long.remainderUnsigned(r, 10000);
          String value = "{\"seq\":" + seq + ",\"key\":\"" + key + "\",\"value\":" + Long.remainderUnsigned(r >>> 32, 1000) + "}";
          return Tuple3.of(key, value, seq);
        }).returns(Types.TUPLE(Types.STRING, Types.STRING, Types.LONG))
        .assignTimestampsAndWatermarks(WatermarkStrategy.<Tuple3<String, String, Long>>forMonotonousTimestamps()
            .withTimestampAssigner((t, ignored) -> t.f2))
        .keyBy(t -> t.f0)
        .window(assigner)
        .aggregate(new Count(), new Format())
        .sinkTo(new DiscardingSink<>());
    env.execute("window-bench");
    double s = (System.nanoTime() - t0) / 1e9;
    System.out.printf("flink window-%s n=%d backend=%s: %.2f s, %.0f events/s%n", kind, n, backend, s, n / s);
  }
}
