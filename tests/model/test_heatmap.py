"""model/heatmap.py: one renderer and one colour scale for every heat map."""
import torch


def test_one_heat_map_renderer_and_one_colour_scale():
    """model.heatmap draws the maps for inference's panels, the pictures of videos and photos and
    the trainer's TensorBoard examples alike: one fixed scale per map (the reconstruction
    difference 0 to HEAT_MAX, clipped above; Grad-CAM 0 to 1), one perceptually uniform colour
    map."""
    import numpy as np

    from model.heatmap import (
        DIFFERENCE,
        GRAD_CAM,
        HEAT_MAX,
        difference_map,
        heat_colours,
        heat_map,
        heat_ramp,
    )
    from trainer.figures import examples_figure
    ramp = heat_ramp(256, 1)[0]  # BGR
    assert np.array_equal(np.round(heat_colours() * 255).astype(np.uint8), ramp[:, ::-1])
    diff = np.array([[0, HEAT_MAX], [2 * HEAT_MAX, HEAT_MAX / 2]], np.float32)
    img = heat_map(diff)
    assert img.shape == (2, 2, 3)
    assert (img[0, 0] == ramp[0]).all() and (img[0, 1] == ramp[255]).all()
    assert (img[1, 0] == ramp[255]).all() and not (img[1, 1] == ramp[255]).all()
    assert heat_map(diff, 8).shape == (8, 8, 3) and heat_map(diff, (6, 4)).shape == (4, 6, 3)
    cam = np.array([[0, 1], [0.5, 2]], np.float32)  # Grad-CAM's scale: 0 to 1
    img = heat_map(cam, top=GRAD_CAM.top)
    assert (img[0, 0] == ramp[0]).all() and (img[0, 1] == ramp[255]).all()
    assert (img[1, 1] == ramp[255]).all() and (img[1, 0] == ramp[127]).all()
    assert (DIFFERENCE.top, GRAD_CAM.top) == (HEAT_MAX, 1.0)
    # a perceptually uniform colour map: matplotlib's viridis, dark for 0, bright for the top
    from matplotlib import colormaps
    assert np.abs(heat_colours() - colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]).max() < 0.02
    x = torch.zeros(2, 3, 8, 8)
    recons = x.clone()
    recons[:, :, :4] = 1.0  # top half far off (clipped to the top colour), bottom half exact
    assert difference_map(x, recons).shape == (2, 8, 8)
    fig = examples_figure((x, recons, torch.tensor([0, 1]), torch.tensor([0.2, 0.8])),
                          ((0.5,) * 3, (0.5,) * 3))
    shown = np.asarray(fig.axes[4].images[0].get_array())  # row 3, first example: the heat map
    assert (shown[:4] == ramp[255][::-1]).all() and (shown[4:] == ramp[0][::-1]).all()
    bar = [c for c in fig.axes[-1].collections if c.norm.vmax is not None]  # the colour bar
    assert len(bar) == 1 and (bar[0].norm.vmin, bar[0].norm.vmax) == (0, HEAT_MAX)
    assert np.allclose(bar[0].cmap(np.linspace(0, 1, 256))[:, :3], heat_colours())
    import matplotlib.pyplot as plt
    plt.close(fig)
