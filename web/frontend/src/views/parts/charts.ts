// ECharts for these views, tree-shaken to the charts they draw, and one helper that ties a
// chart to an element's life (resize with the element, dispose on unmount).
import { BarChart, LineChart, PieChart } from "echarts/charts";
import {
  GridComponent,
  LegendComponent,
  MarkAreaComponent,
  MarkLineComponent,
  MarkPointComponent,
  TitleComponent,
  TooltipComponent,
} from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";
import { onBeforeUnmount, type Ref, shallowRef, watch } from "vue";

echarts.use([
  BarChart,
  LineChart,
  PieChart,
  GridComponent,
  LegendComponent,
  MarkAreaComponent,
  MarkLineComponent,
  MarkPointComponent,
  TitleComponent,
  TooltipComponent,
  CanvasRenderer,
]);

export type Chart = echarts.ECharts;
export type ChartOption = echarts.EChartsCoreOption;

/** A chart living in `el` while it is mounted; `theme` "dark" for the wall screen. */
export function useChart(el: Ref<HTMLElement | null>, theme: Ref<string | undefined> = shallowRef(undefined)) {
  const chart = shallowRef<Chart | null>(null);
  let ro: ResizeObserver | null = null;
  let last: ChartOption | null = null;

  function mount(): void {
    chart.value?.dispose();
    chart.value = null;
    ro?.disconnect();
    if (!el.value) return;
    chart.value = echarts.init(el.value, theme.value, { renderer: "canvas" });
    ro = new ResizeObserver(() => chart.value?.resize());
    ro.observe(el.value);
    if (last) chart.value.setOption(last, true);
  }

  watch([el, theme], mount, { flush: "post" });

  onBeforeUnmount(() => {
    ro?.disconnect();
    chart.value?.dispose();
    chart.value = null;
  });

  return {
    chart,
    set(option: ChartOption, replace = true): void {
      last = option;
      if (!chart.value && el.value) mount();
      chart.value?.setOption(option, replace);
    },
  };
}
