// The submit form's task picker: a <select> of the registered tasks with a line about the chosen
// one (its doc, how many workers run it); a free text field when the task list is unavailable.

import { clear, h, setText } from "./dom.js";
import { showError } from "./submit-errors.js";

/** The task field of form number `n`; `onChange()` when another task is picked. */
const NO_TASKS = "No tasks are registered with the service. Workers register theirs when they start.";

export function taskPicker(n, { onChange }) {
  let tasks = [];
  let loaded = false;
  const taskSel = h("select", { id: `task-${n}`, name: "task", "aria-describedby": `task-${n}-err task-${n}-doc` });
  let input = taskSel; // the <select>, or a text input when the task list is unavailable
  const taskErr = h("p", { class: "field-error", id: `task-${n}-err`, hidden: true });
  const taskDoc = h("p", { class: "hint", id: `task-${n}-doc` });
  const el = h(
    "div",
    { class: "field", dataset: { field: "$task" } },
    h("label", { for: `task-${n}` }, "Task"),
    taskSel,
    taskDoc,
    taskErr,
  );
  taskSel.addEventListener("change", onChange);

  return {
    el,
    /** The task name to submit. */
    value: () => input.value.trim(),
    /** The name picked in the list (for the URL). */
    selected: () => taskSel.value,
    /** The picked task's entry in the list, or null. */
    current: () => tasks.find((t) => t.name === taskSel.value) || null,
    /** The line under the field: the task's doc and who runs it. */
    describe(task) {
      const info = [];
      if (task) {
        if (task.doc) info.push(task.doc);
        info.push(
          task.workers
            ? `${task.workers} worker process${task.workers === 1 ? "" : "es"} run${task.workers === 1 ? "s" : ""} this task.`
            : "No worker runs this task right now: jobs wait in the queue until one starts.",
        );
      } else if (loaded && !tasks.length) {
        info.push(NO_TASKS); // the fields are rebuilt after the list comes: keep saying so
      }
      setText(taskDoc, info.join(" "));
    },
    /** The registered tasks; `want` is picked when it is one of them. */
    setTasks(list, want) {
      tasks = list;
      loaded = true;
      clear(taskSel);
      for (const t of tasks) taskSel.append(h("option", { value: t.name }, t.name));
      if (want && tasks.some((t) => t.name === want)) taskSel.value = want;
      if (!tasks.length) setText(taskDoc, NO_TASKS);
    },
    /** The task list could not be had (error `e`): a free task name instead, `name` to start. */
    unavailable(e, name) {
      const free = h("input", {
        type: "text",
        id: taskSel.id,
        name: "task",
        value: name,
        "aria-describedby": taskSel.getAttribute("aria-describedby"),
      });
      taskSel.replaceWith(free);
      input = free;
      setText(taskDoc, `The task list is unavailable (${e.message}); type a task name and its payload as JSON.`);
    },
    showError: (msg) => showError(input, taskErr, msg),
  };
}
